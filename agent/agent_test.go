package agent

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoalproject/shoal/internal/metrics/metricstest"
	"github.com/shoalproject/shoal/internal/testenv"
)

// A plain registry (no torrents): a go-containerregistry pull through
// 127.0.0.1:<agent>/<repo> gets every layer, verified by ggcr against its
// digest; the second pull is served from the cache.
func TestPullThroughPlainRegistry(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/app", 1<<20, 3)
	ag := startAgent(t, testConfig(t, reg))

	for round := 0; round < 2; round++ {
		ref, err := name.NewTag(ag.mirror+"/lib/app:latest", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		pulled, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("pull through agent: %v", err)
		}
		want, _ := img.Digest()
		got, _ := pulled.Digest()
		if want != got {
			t.Fatalf("manifest digest %s, want %s", got, want)
		}
		ls, err := pulled.Layers()
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range ls {
			rc, err := l.Compressed() // ggcr checks the digest at EOF
			if err != nil {
				t.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, rc); err != nil {
				t.Fatalf("layer read (round %d): %v", round, err)
			}
			rc.Close()
		}
	}
	if v := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="no_torrent"}`); v != 3 {
		t.Errorf("no_torrent fallbacks = %v, want 3", v)
	}
	if v := metric(t, ag.mirror, "shoal_agent_cache_hits_total"); v < 3 {
		t.Errorf("cache hits = %v, want >= 3 on the second pull", v)
	}
	if v := metric(t, ag.mirror, `shoal_agent_blob_bytes_total{source="registry"}`); v < 3<<20 {
		t.Errorf("registry bytes = %v, want >= 3 MiB", v)
	}
	// Every family is present now (fallbacks observed): names, units and
	// labels against docs/metrics.md.
	metricstest.Documented(t, "agent", ag.metrics.reg)
}

// 20 concurrent requests for one blob cause one upstream download.
func TestSingleFlight(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/big", 16<<20, 1)
	proxy := startCountingProxy(t, reg)
	ag := startAgent(t, testConfig(t, proxy.addr))
	d := layerDigests(t, img)[0]

	var wg sync.WaitGroup
	errs := make(chan string, 20)
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, sum, _ := getBlob(t, ag.mirror, "lib/big", d, nil)
			if status != 200 || sum != d.String() {
				errs <- fmt.Sprintf("status %d digest %s", status, sum)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
	if n := proxy.blobGets.Load(); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1", n)
	}
	l, _ := img.LayerByDigest(d)
	size, _ := l.Size()
	if n := proxy.blobBytes.Load(); n != size {
		t.Errorf("upstream blob bytes = %d, want %d", n, size)
	}
	if v := metric(t, ag.mirror, "shoal_agent_blob_downloads_total"); v != 1 {
		t.Errorf("downloads = %v, want 1", v)
	}
}

// The cache survives a restart without downloading again, and a cached file
// corrupted on disk is detected, deleted and fetched again.
func TestRestartAndCorruption(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/x", 2<<20, 2)
	proxy := startCountingProxy(t, reg)
	cfg := testConfig(t, proxy.addr)
	ds := layerDigests(t, img)

	ag := startAgent(t, cfg)
	for _, d := range ds {
		if st, sum, _ := getBlob(t, ag.mirror, "lib/x", d, nil); st != 200 || sum != d.String() {
			t.Fatalf("first fetch: %d %s", st, sum)
		}
	}
	// The client has every byte once the digest matched; the commit into
	// the cache (rename, fsyncs) follows. Stop only after it did.
	for _, d := range ds {
		waitCached(t, ag.Agent, d.Hex)
	}
	ag.stop()
	if n := proxy.blobGets.Load(); n != 2 {
		t.Fatalf("blob GETs after first run = %d, want 2", n)
	}

	// Corrupt the second blob while the agent is down (same size).
	path := filepath.Join(cfg.Cache.Dir, "blobs", ds[1].Hex)
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	b[100] ^= 0xff
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}

	cfg.Mirror.Addr, cfg.Control.Addr = testenv.FreeAddr(t), testenv.FreeAddr(t) // fresh ports
	ag2 := startAgent(t, cfg)
	if st, sum, _ := getBlob(t, ag2.mirror, "lib/x", ds[0], nil); st != 200 || sum != ds[0].String() {
		t.Fatalf("after restart: %d %s", st, sum)
	}
	if n := proxy.blobGets.Load(); n != 2 {
		t.Errorf("intact cached blob downloaded again after restart (GETs = %d)", n)
	}
	if st, sum, _ := getBlob(t, ag2.mirror, "lib/x", ds[1], nil); st != 200 || sum != ds[1].String() {
		t.Fatalf("corrupted blob: %d %s", st, sum)
	}
	if n := proxy.blobGets.Load(); n != 3 {
		t.Errorf("corrupted blob: upstream GETs = %d, want 3 (re-fetched once)", n)
	}
	// While running: a modified file is noticed too (mtime/size changed).
	// Modified once it is the cache's (written before the commit, the file
	// would only be replaced by it), while its flight may still be
	// finishing.
	waitCached(t, ag2.Agent, ds[1].Hex)
	time.Sleep(10 * time.Millisecond)
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, len(b)), 0o644); err != nil {
		t.Fatal(err)
	}
	if st, sum, _ := getBlob(t, ag2.mirror, "lib/x", ds[1], nil); st != 200 || sum != ds[1].String() {
		t.Fatalf("blob corrupted while running: %d %s", st, sum)
	}
	if n := proxy.blobGets.Load(); n != 4 {
		t.Errorf("upstream GETs = %d, want 4", n)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// Eviction under a small cache limit: old blobs go, the size stays bounded.
func TestEviction(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/e", 1<<20, 5)
	cfg := testConfig(t, reg)
	cfg.Cache.MaxBytes = 3<<20 + 1<<19 // room for three 1 MiB blobs
	ag := startAgent(t, cfg)
	ds := layerDigests(t, img)
	for _, d := range ds {
		if st, sum, _ := getBlob(t, ag.mirror, "lib/e", d, nil); st != 200 || sum != d.String() {
			t.Fatalf("fetch: %d %s", st, sum)
		}
		// The client has every byte before the blob's commit (fsync and
		// rename) ends: wait for it, or the next blob races it for room.
		waitCached(t, ag.Agent, d.Hex)
	}
	if used, _ := ag.store.Usage(); used > cfg.Cache.MaxBytes {
		t.Errorf("cache uses %d > limit %d", used, cfg.Cache.MaxBytes)
	}
	if v := metric(t, ag.mirror, "shoal_agent_cache_evictions_total"); v != 2 {
		t.Errorf("evictions = %v, want 2", v)
	}
	for i, d := range ds {
		_, err := os.Stat(filepath.Join(cfg.Cache.Dir, "blobs", d.Hex))
		if evicted := os.IsNotExist(err); evicted != (i < 2) {
			t.Errorf("blob %d evicted=%v", i, evicted)
		}
	}
}

func htpasswdConfig(t *testing.T, user, pass string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(path, []byte(user+":"+string(h)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("auth:\n  htpasswd:\n    realm: test\n    path: %s\n", path)
}

// A client without (or with wrong) credentials cannot get a blob that is
// already in the agent's cache; the upstream's 401 challenge reaches it.
func TestAuthNoCrossTenantLeak(t *testing.T) {
	reg := startUpstreamRegistry(t, htpasswdConfig(t, "alice", "secret"))
	basic := &authn.Basic{Username: "alice", Password: "secret"}
	img := pushRandom(t, reg, "private/app", 1<<20, 1, remote.WithAuth(basic))
	ag := startAgent(t, testConfig(t, reg))
	d := layerDigests(t, img)[0]

	// The authorized client pulls through the agent (ggcr does the auth dance).
	ref, _ := name.NewTag(ag.mirror+"/private/app:latest", name.Insecure)
	pulled, err := remote.Image(ref, remote.WithAuth(basic))
	if err != nil {
		t.Fatalf("authorized pull: %v", err)
	}
	l, _ := pulled.LayerByDigest(d)
	rc, _ := l.Compressed()
	if _, err := io.Copy(io.Discard, rc); err != nil {
		t.Fatalf("authorized layer read: %v", err)
	}
	rc.Close()
	// The client has every byte before the commit lands: wait for it.
	waitCached(t, ag.Agent, d.Hex)

	for _, hdr := range []map[string]string{nil, {"Authorization": "Basic " + b64("alice:wrong")}} {
		st, _, body := getBlob(t, ag.mirror, "private/app", d, hdr)
		if st != http.StatusUnauthorized {
			t.Errorf("unauthorized client got %d (%d bytes), want 401", st, len(body))
		}
		if bytes.Contains(body, []byte{0}) || len(body) > 1000 {
			t.Errorf("unauthorized client got blob-like body")
		}
	}
	// Challenge passed through.
	resp, err := http.Get("http://" + ag.mirror + "/v2/private/app/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if wa := resp.Header.Get("WWW-Authenticate"); !strings.Contains(wa, `realm="test"`) {
		t.Errorf("WWW-Authenticate = %q", wa)
	}
	// And the authorized client still gets it from the cache.
	if st, sum, _ := getBlob(t, ag.mirror, "private/app", d, map[string]string{"Authorization": "Basic " + b64("alice:secret")}); st != 200 || sum != d.String() {
		t.Errorf("authorized cached read: %d %s", st, sum)
	}
}

// Malformed names, digests and ranges get OCI error bodies; valid ranges work.
func TestBadInputAndRanges(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/r", 1<<20, 1)
	ag := startAgent(t, testConfig(t, reg))
	d := layerDigests(t, img)[0]
	_, _, full := getBlob(t, ag.mirror, "lib/r", d, nil)

	cases := []struct {
		path, rng string
		status    int
		code      string
	}{
		{"/v2/Lib/R/blobs/" + d.String(), "", 400, "NAME_INVALID"},
		{"/v2/lib/r/blobs/sha256:xyz", "", 400, "DIGEST_INVALID"},
		{"/v2/lib/r/blobs/md5:" + strings.Repeat("a", 32), "", 400, "DIGEST_INVALID"},
		{"/v2/lib/r/manifests/bad%20tag!", "", 400, "TAG_INVALID"},
		{"/v2/lib/r/blobs/" + d.String(), "bytes=5000000-", 416, "RANGE_INVALID"},
		{"/v2/lib/r/blobs/" + d.String(), "bytes=10-5", 416, "RANGE_INVALID"},
		{"/v2/lib/r/blobs/" + d.String(), "pages=1-2", 416, "RANGE_INVALID"},
		{"/v2/lib/r/blobs/uploads/", "", 405, "UNSUPPORTED"},
		{"/v2/lib/r/blobs/" + d.String() + "?ns=unknown.example", "", 404, "NAME_UNKNOWN"},
	}
	for _, c := range cases {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ag.mirror+c.path, nil)
		if c.rng != "" {
			req.Header.Set("Range", c.rng)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body struct {
			Errors []struct{ Code string }
		}
		json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || len(body.Errors) == 0 || body.Errors[0].Code != c.code {
			t.Errorf("%s %s: %d %+v, want %d %s", c.path, c.rng, resp.StatusCode, body.Errors, c.status, c.code)
		}
	}
	for _, rng := range []struct {
		h          string
		start, end int
	}{{"bytes=0-99", 0, 99}, {"bytes=1000-", 1000, len(full) - 1}, {"bytes=-10", len(full) - 10, len(full) - 1}} {
		st, _, b := getBlob(t, ag.mirror, "lib/r", d, map[string]string{"Range": rng.h})
		if st != 206 || !bytes.Equal(b, full[rng.start:rng.end+1]) {
			t.Errorf("range %s: status %d, %d bytes", rng.h, st, len(b))
		}
	}
	// Ranges also work on a blob that is not cached yet (streamed download).
	img2 := pushRandom(t, reg, "lib/r2", 1<<20, 1)
	d2 := layerDigests(t, img2)[0]
	if st, _, b := getBlob(t, ag.mirror, "lib/r2", d2, map[string]string{"Range": "bytes=100-199"}); st != 206 || len(b) != 100 {
		t.Errorf("range on uncached blob: %d, %d bytes", st, len(b))
	}
}

// The download rate limit caps how fast the agent pulls from the registry.
func TestDownloadRateLimit(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/slow", 3<<20, 1)
	cfg := testConfig(t, reg)
	cfg.P2P.DownloadBytesPerSec = 2 << 20
	ag := startAgent(t, cfg)
	d := layerDigests(t, img)[0]
	start := time.Now()
	if st, sum, _ := getBlob(t, ag.mirror, "lib/slow", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("pull: %d %s", st, sum)
	}
	// 3 MiB at 2 MiB/s with a 1 MiB burst takes at least one second.
	if el := time.Since(start); el < 900*time.Millisecond {
		t.Errorf("3 MiB downloaded in %s despite a 2 MiB/s limit", el)
	}
}
