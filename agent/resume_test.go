package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// An agent killed (-9) mid-blob leaves its pieces on disk; restarted, it
// checks them against their SHA-1 and fetches only the rest.
func TestResumeAfterKill(t *testing.T) { testResume(t, true, (*testenv.Process).Kill) }

// An agent stopped gracefully (SIGTERM) mid-blob keeps its partial file as
// a killed one does, and its restart continues from the verified pieces.
func TestResumeAfterGracefulStop(t *testing.T) { testResume(t, true, (*testenv.Process).Stop) }

// A blob over plain HTTP (the upstream has no torrent) continues too: from
// the prefix whose sha256 checkpoint the file still hashes to, with a
// Range request for the rest.
func TestResumeHTTPAfterKill(t *testing.T) { testResume(t, false, (*testenv.Process).Kill) }

// The same after a graceful stop.
func TestResumeHTTPAfterGracefulStop(t *testing.T) { testResume(t, false, (*testenv.Process).Stop) }

// testResume runs a `shoal agent` process, stops it (stop) once half of a
// 24 MiB blob came in, through the swarm (torrent) or over plain HTTP, and
// wants the restarted agent to keep at least half of what it had and to
// fetch little more than the rest.
func testResume(t *testing.T, torrent bool, stop func(*testenv.Process)) {
	const size = 24 << 20
	var upstream, p2p string
	if torrent {
		trackerURL, _ := startShoalTracker(t, testTrackerSecret)
		upstream = startShoalRegistrySecret(t, trackerURL, testTrackerSecret, 0, true)
		p2p = `{enabled: true, addr: "127.0.0.1:0", downloadBytesPerSec: 4194304}`
	} else {
		upstream = startUpstreamRegistry(t, "")
		p2p = `{enabled: false, downloadBytesPerSec: 4194304}`
	}
	img := pushRandom(t, upstream, "lib/resume", size, 1)
	d := layerDigests(t, img)[0]
	// A plain download's bytes are counted by a proxy in front of the
	// upstream; the swarm's registry pieces by the agent.
	proxy := startCountingProxy(t, upstream)
	via := proxy.addr
	if torrent {
		via = upstream
	}
	bin := testenv.ShoalBinary(t)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	mirror := testenv.FreeAddr(t)
	cfg := filepath.Join(dir, "agent.yml")
	os.WriteFile(cfg, fmt.Appendf(nil, `node: {id: resume}
cluster: {secret: %q}
mirror: {addr: %s}
control: {addr: %s}
upstreams:
  - {host: %q, url: "http://%s", default: true}
cache: {dir: %q, maxBytes: 1073741824}
p2p: %s
log: {level: warn}
`, testClusterSecret, mirror, testenv.FreeAddr(t), upstream, via, cache, p2p), 0o600)
	start := func() *testenv.Process {
		p := testenv.Start(t, "shoal agent", bin, []string{"agent", "--config", cfg})
		testenv.WaitHTTP(t, p, "http://"+mirror+"/healthz", 30*time.Second)
		return p
	}
	p := start()
	// The client goes away before the stop, as a graceful stop would wait
	// for its response to end (and with it the download); the download
	// goes on without it.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+mirror+"/v2/lib/resume/blobs/"+d.String(), nil)
	go func() {
		if resp, err := http.DefaultClient.Do(req); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	fetched := func() float64 {
		if !torrent {
			return float64(proxy.blobBytes.Load())
		}
		return metric(t, mirror, `shoal_agent_registry_piece_bytes_total{reason="alone"}`) + metric(t, mirror, `shoal_agent_registry_piece_bytes_total{reason="share"}`)
	}
	// What the agent wrote of the blob: its partial file's bytes on disk.
	written := func() float64 {
		var n int64
		des, _ := os.ReadDir(filepath.Join(cache, "partial"))
		for _, de := range des {
			if fi, err := de.Info(); err == nil && filepath.Ext(de.Name()) != ".sha256" {
				if st, ok := fi.Sys().(*syscall.Stat_t); ok {
					n += min(fi.Size(), st.Blocks*512)
				}
			}
		}
		return float64(n)
	}
	for deadline := time.Now().Add(30 * time.Second); written() < size/2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the download never got half way")
		}
	}
	cancel()
	before := written() // what a stop must not throw away
	stop(p)
	var base float64 // what the proxy counted before the restart
	if !torrent {
		base = fetched()
	}

	start()
	if st, sum, _ := getBlob(t, mirror, "lib/resume", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("after the restart: %d %s", st, sum)
	}
	resumed := metric(t, mirror, "shoal_agent_resumed_bytes_total")
	again := fetched() - base
	t.Logf("stopped with %.1f MiB or more written; restarted: %.1f MiB kept, %.1f MiB fetched", before/(1<<20), resumed/(1<<20), again/(1<<20))
	// A plain stream keeps what it hashed up to its last checkpoint (every
	// MiB, and at a graceful stop); the hasher keeps up with the stream.
	if resumed < before/2 {
		t.Errorf("the restarted agent kept %v bytes of the %v written before the stop", resumed, before)
	}
	if again > size-resumed+4<<20 {
		t.Errorf("the restarted agent fetched %v bytes again of %d, having kept %v", again, size, resumed)
	}
}

// A plain HTTP download that fails for good mid-blob (the upstream cuts
// the body, then refuses every request) keeps its verified prefix: the
// next request for the blob continues from it with a Range request,
// without any restart.
func TestResumeHTTPAfterFailure(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	const size, cut = 16 << 20, 8 << 20
	img := pushRandom(t, reg, "lib/flaky", size, 1)
	d := layerDigests(t, img)[0]
	var broken atomic.Bool
	var body atomic.Int64 // blob body bytes sent
	broken.Store(true)
	u, _ := url.Parse("http://" + reg)
	rp := httputil.NewSingleHostReverseProxy(u)
	rp.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method == http.MethodGet && strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") {
			limit := int64(-1)
			if broken.Load() {
				limit = cut
			}
			resp.Body = &cutBody{ReadCloser: resp.Body, left: limit, sent: &body}
		}
		return nil
	}
	var mu sync.Mutex
	var ranges []string // of blob GETs once the upstream recovered
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if rg := r.Header.Get("Range"); !broken.Load() && rg != "" && strings.Contains(r.URL.Path, "/blobs/sha256:") {
			mu.Lock()
			ranges = append(ranges, rg)
			mu.Unlock()
		}
		// Once the first body was cut, every blob GET is refused.
		if broken.Load() && r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/sha256:") && body.Load() >= cut {
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	a := startAgent(t, testConfig(t, strings.TrimPrefix(srv.URL, "http://")))

	// whole GETs the blob and reports whether it came whole and right (a
	// failed download cuts the body).
	whole := func() bool {
		resp, err := http.Get("http://" + a.mirror + "/v2/lib/flaky/blobs/" + d.String())
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		h := sha256.New()
		_, err = io.Copy(h, resp.Body)
		return err == nil && resp.StatusCode == http.StatusOK && "sha256:"+hex.EncodeToString(h.Sum(nil)) == d.String()
	}
	if whole() {
		t.Fatal("the first download succeeded through a broken upstream")
	}
	broken.Store(false)
	before := body.Load()
	// The failed flight ends (its file set aside) before a new request
	// can start one: retry until the blob comes whole.
	for deadline := time.Now().Add(30 * time.Second); !whole(); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no whole blob after the upstream recovered")
		}
	}
	resumed := metric(t, a.mirror, "shoal_agent_resumed_bytes_total")
	t.Logf("cut at %d MiB; then %.1f MiB kept, %.1f MiB through the proxy (the torrent request's answer, a plain registry's blob body, is closed unread), ranges %q",
		cut>>20, resumed/(1<<20), float64(body.Load()-before)/(1<<20), ranges)
	if resumed < cut/2 {
		t.Errorf("kept %v bytes of the %d the failed download had", resumed, cut)
	}
	mu.Lock()
	defer mu.Unlock()
	if want := fmt.Sprintf("bytes=%d-", int64(resumed)); !slices.Contains(ranges, want) {
		t.Errorf("the upstream was asked for %q, not the rest from the kept prefix (%s)", ranges, want)
	}
}

// cutBody ends a body with an error after left bytes (left < 0: never).
type cutBody struct {
	io.ReadCloser
	left int64
	sent *atomic.Int64
}

func (c *cutBody) Read(p []byte) (int, error) {
	if c.left == 0 {
		return 0, errors.New("connection cut")
	}
	if c.left > 0 && int64(len(p)) > c.left {
		p = p[:c.left]
	}
	n, err := c.ReadCloser.Read(p)
	c.sent.Add(int64(n))
	if c.left > 0 {
		c.left -= int64(n)
	}
	return n, err
}
