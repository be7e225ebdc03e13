package registry

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/storage"

	"github.com/shoalproject/shoal/internal/peerwire/peerwiretest"
	"github.com/shoalproject/shoal/internal/testenv"
)

// TestRegistryBenchmark is `make bench`'s registry part, not a test: it runs
// only when SHOAL_BENCH_OUT names a directory for the results. It measures
// (1) direct blob GET throughput of shoal vs the upstream registry binary on
// the same storage, in the same run, as a ratio; (2) push-to-seeding latency
// for a 1 GiB layer pushed through Shoal vs one Shoal has to hash lazily.
func TestRegistryBenchmark(t *testing.T) {
	out := os.Getenv("SHOAL_BENCH_OUT")
	if out == "" {
		t.Skip("benchmark; run with `make bench`")
	}
	upstreamBin := testenv.ToolBinary(t, "REGISTRY_BIN")
	root := t.TempDir()
	upAddr := testenv.FreeAddr(t)
	upCfg := filepath.Join(t.TempDir(), "upstream.yml")
	os.WriteFile(upCfg, []byte(fmt.Sprintf(`version: 0.1
log: {level: error, accesslog: {disabled: true}}
http: {addr: %q}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
`, upAddr, root)), 0o644)
	up := testenv.Start(t, "upstream registry", upstreamBin, []string{"serve", upCfg}, "OTEL_TRACES_EXPORTER=none")
	testenv.WaitHTTP(t, up, "http://"+upAddr+"/v2/", 30*time.Second)
	// Same log level as the upstream: distribution logs every request at info.
	shoal := startRegistry(t, regOpts{root: root, logLevel: "error"})

	sizes := []int64{1 << 20, 64 << 20, 1 << 30}
	blobs := map[int64]string{}
	for i, size := range sizes {
		blobs[size] = streamUpload(t, "http://"+upAddr, "bench/blobs", size, uint64(i+1))
	}

	type row struct {
		Size        int64   `json:"size_bytes"`
		Clients     int     `json:"clients"`
		UpstreamMBs float64 `json:"upstream_mib_s"`
		ShoalMBs    float64 `json:"shoal_mib_s"`
		Ratio       float64 `json:"ratio"`
	}
	var rows []row
	for _, size := range sizes {
		for _, clients := range []int{1, 16} {
			// Enough requests for a stable number, capped at 4 GiB per round.
			reqs := int(max(int64(clients), min(int64(4<<30)/size, 256)))
			var u, s []float64
			for round := 0; round < 3; round++ { // interleaved, best of three
				u = append(u, getThroughput(t, "http://"+upAddr, blobs[size], size, clients, reqs))
				s = append(s, getThroughput(t, shoal.URL(), blobs[size], size, clients, reqs))
			}
			r := row{Size: size, Clients: clients, UpstreamMBs: maxOf(u), ShoalMBs: maxOf(s)}
			r.Ratio = r.ShoalMBs / r.UpstreamMBs
			t.Logf("GET %7s x%-2d  upstream %8.1f MiB/s  shoal %8.1f MiB/s  ratio %.3f", human(size), clients, r.UpstreamMBs, r.ShoalMBs, r.Ratio)
			rows = append(rows, r)
		}
	}

	// Push-to-seeding: a 1 GiB layer pushed through Shoal (hashed in flight)
	// vs the 1 GiB blob the upstream registry wrote (hashed on first need).
	inflight := streamUpload(t, shoal.URL(), "bench/seed", 1<<30, 99)
	pushed := firstPieceLatency(t, shoal, "bench/seed", inflight)
	lazy := firstPieceLatency(t, shoal, "bench/blobs", blobs[1<<30])
	t.Logf("push-to-seeding, 1 GiB layer: in-flight hashed %s, lazily hashed %s", pushed.Round(time.Millisecond), lazy.Round(time.Millisecond))

	res := map[string]any{
		"date":       time.Now().UTC().Format(time.RFC3339),
		"throughput": rows,
		"push_to_seeding_ms": map[string]float64{
			"pushed_through_shoal_1GiB": float64(pushed.Microseconds()) / 1000,
			"predating_shoal_1GiB":      float64(lazy.Microseconds()) / 1000,
		},
	}
	os.MkdirAll(out, 0o755)
	j, _ := json.MarshalIndent(res, "", "  ")
	os.WriteFile(filepath.Join(out, "registry.json"), j, 0o644)
	var md strings.Builder
	md.WriteString("# Registry benchmark\n\nDirect blob GET throughput, same storage, same run (best of 3, interleaved).\n\n")
	md.WriteString("| blob | clients | upstream MiB/s | shoal MiB/s | shoal/upstream |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&md, "| %s | %d | %.1f | %.1f | %.3f |\n", human(r.Size), r.Clients, r.UpstreamMBs, r.ShoalMBs, r.Ratio)
	}
	fmt.Fprintf(&md, "\nPush-to-seeding (manifest/upload done → seeder serves first piece), 1 GiB layer: pushed through Shoal %s; predating Shoal (lazy hashing) %s.\n",
		pushed.Round(time.Millisecond), lazy.Round(time.Millisecond))
	os.WriteFile(filepath.Join(out, "registry.md"), []byte(md.String()), 0o644)
}

func maxOf(v []float64) float64 { sort.Float64s(v); return v[len(v)-1] }

func human(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%dGiB", n>>30)
	case n >= 1<<20:
		return fmt.Sprintf("%dMiB", n>>20)
	}
	return fmt.Sprintf("%dB", n)
}

// streamUpload pushes size deterministic incompressible bytes as one
// streamed PATCH and returns the digest.
func streamUpload(t *testing.T, base, repo string, size int64, seed uint64) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, body := getBody(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", resp.StatusCode, body)
	}
	u, _ := url.Parse(base)
	next, _ := u.Parse(resp.Header.Get("Location"))
	h := sha256.New()
	src := io.TeeReader(io.LimitReader(rand.NewChaCha8([32]byte{byte(seed)}), size), h)
	req, _ = http.NewRequest(http.MethodPatch, next.String(), src)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body = getBody(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
	}
	dgst := "sha256:" + hex.EncodeToString(h.Sum(nil))
	next, _ = u.Parse(resp.Header.Get("Location"))
	q := next.Query()
	q.Set("digest", dgst)
	next.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, next.String(), nil)
	resp, body = getBody(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("commit: %d %s", resp.StatusCode, body)
	}
	return dgst
}

// getThroughput runs reqs GETs of the blob over clients connections and
// returns MiB/s.
func getThroughput(t *testing.T, base, dgst string, size int64, clients, reqs int) float64 {
	t.Helper()
	tr := &http.Transport{MaxIdleConnsPerHost: clients, DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	work := make(chan struct{}, reqs)
	for i := 0; i < reqs; i++ {
		work <- struct{}{}
	}
	close(work)
	var wg sync.WaitGroup
	var failed error
	var mu sync.Mutex
	start := time.Now()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range work {
				resp, err := c.Get(base + "/v2/bench/blobs/blobs/" + dgst)
				if err == nil {
					var n int64
					n, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && n != size {
						err = fmt.Errorf("short body %d", n)
					}
				}
				if err != nil {
					mu.Lock()
					failed = err
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if failed != nil {
		t.Fatalf("GET %s: %v", base, failed)
	}
	return float64(size) * float64(reqs) / (1 << 20) / time.Since(start).Seconds()
}

// firstPieceLatency asks for the blob's torrent the way an agent does and
// times until a fresh client has verified its first piece from the seeder.
func firstPieceLatency(t *testing.T, r *testRegistry, repo, dgst string) time.Duration {
	t.Helper()
	start := time.Now()
	_, loc := torrentRedirect(t, r.URL(), repo, dgst, nil)
	mi := fetchMetainfo(t, loc)
	// A member of the registry's cluster: the seeder serves no one else.
	cl := peerwiretest.Client(t, testClusterSecret)
	spec, _ := torrent.TorrentSpecFromMetaInfoErr(mi)
	spec.Storage = storage.NewMMap(t.TempDir())
	spec.Trackers = nil
	spec.Webseeds = nil
	tor, _, err := cl.AddTorrentSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	sub := tor.SubscribePieceStateChanges()
	defer sub.Close()
	tor.AddPeers([]torrent.PeerInfo{{Addr: torrent.StringAddr(r.SeederAddr), Trusted: true}})
	tor.DownloadPieces(0, 1)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for {
		select {
		case ev := <-sub.Values:
			if ev.Index == 0 && ev.Complete {
				return time.Since(start)
			}
		case <-ctx.Done():
			t.Fatal("first piece never arrived")
		}
	}
}
