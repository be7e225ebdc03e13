package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// testClusterSecret is the join secret of every agent a test of this
// package starts (one cluster per test binary).
var testClusterSecret = secret.Generate()

// startUpstreamRegistry runs the upstream distribution `registry` binary
// (no Shoal middleware) with optional extra YAML (e.g. auth), returning its
// host:port.
func startUpstreamRegistry(t *testing.T, extra string) string {
	t.Helper()
	bin := testenv.ToolBinary(t, "REGISTRY_BIN")
	addr := testenv.FreeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: %s}
http:
  addr: %s
%s`, filepath.Join(dir, "data"), addr, extra)
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "registry", bin, []string{"serve", path})
	testenv.WaitHTTP(t, p, "http://"+addr+"/v2/", 20*time.Second)
	return addr
}

// pushRandom pushes a random image of n layers of size bytes to host/repo:latest.
func pushRandom(t *testing.T, host, repo string, size int64, n int64, opts ...remote.Option) v1.Image {
	return testenv.PushRandomImage(t, host+"/"+repo+":latest", size, n, opts...)
}

type testAgent struct {
	*Agent
	mirror, control string // host:port
	stop            func()
}

func testConfig(t *testing.T, upstreamHost string) Config {
	cfg := DefaultConfig()
	cfg.Node.ID = "test-node"
	cfg.Cluster.Secret = testClusterSecret
	cfg.Mirror.Addr = testenv.FreeAddr(t)
	cfg.Control.Addr = testenv.FreeAddr(t)
	cfg.Upstreams = []Upstream{{Host: upstreamHost, URL: "http://" + upstreamHost, Default: true}}
	cfg.Cache.Dir = t.TempDir()
	cfg.Cache.MaxBytes = 1 << 30
	cfg.P2P.Listen = "127.0.0.1:0"
	cfg.P2P.StallTimeout = time.Second
	cfg.Log.Level = "warn"
	return cfg
}

// startAgent runs an agent in this process until the test ends (or stop).
func startAgent(t *testing.T, cfg Config) *testAgent {
	t.Helper()
	a, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", cfg.Mirror.Addr)
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- a.Serve(ctx, l) }()
	var once sync.Once
	stop := func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("agent Serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	testenv.WaitHTTP(t, nil, "http://"+cfg.Mirror.Addr+"/healthz", 10*time.Second)
	return &testAgent{Agent: a, mirror: cfg.Mirror.Addr, control: cfg.Control.Addr, stop: stop}
}

// countingProxy sits in front of a registry and counts blob GETs and the
// bytes of their bodies.
type countingProxy struct {
	addr      string
	blobGets  atomic.Int64
	blobHeads atomic.Int64
	blobBytes atomic.Int64
}

func startCountingProxy(t *testing.T, target string) *countingProxy {
	t.Helper()
	u, _ := url.Parse("http://" + target)
	rp := httputil.NewSingleHostReverseProxy(u)
	cp := &countingProxy{}
	rp.ModifyResponse = func(resp *http.Response) error {
		if strings.Contains(resp.Request.URL.Path, "/blobs/sha256:") && resp.Request.Method == http.MethodGet {
			resp.Body = &countingBody{ReadCloser: resp.Body, add: func(n int) { cp.blobBytes.Add(int64(n)) }}
		}
		return nil
	}
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/sha256:") {
			switch r.Method {
			case http.MethodGet:
				cp.blobGets.Add(1)
			case http.MethodHead:
				cp.blobHeads.Add(1)
			}
		}
		rp.ServeHTTP(w, r)
	})
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	cp.addr = l.Addr().String()
	return cp
}

func layerDigests(t *testing.T, img v1.Image) []v1.Hash { return testenv.LayerDigests(t, img) }

// getBlob GETs a blob through the agent and returns status and body hash.
func getBlob(t *testing.T, mirror, repo string, d v1.Hash, hdr map[string]string) (int, string, []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+mirror+"/v2/"+repo+"/blobs/"+d.String(), nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET blob: %v", err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("read blob body: %v", err)
	}
	sum := sha256.Sum256(b)
	return resp.StatusCode, "sha256:" + hex.EncodeToString(sum[:]), b
}

// metric returns the value of one sample line of an agent's /metrics.
func metric(t *testing.T, addr, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, sample+" "); ok {
			var v float64
			fmt.Sscanf(rest, "%g", &v)
			return v
		}
	}
	return 0
}

func TestMain(m *testing.M) {
	logrus.SetLevel(logrus.WarnLevel)
	os.Exit(m.Run())
}

// countingBody reports the bytes read through it.
type countingBody struct {
	io.ReadCloser
	add func(int)
}

func (c *countingBody) Read(p []byte) (int, error) {
	n, err := c.ReadCloser.Read(p)
	if n > 0 {
		c.add(n)
	}
	return n, err
}

// waitCached waits until the blob is committed to a's cache.
func waitCached(t *testing.T, a *Agent, hex string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if h, ok := a.store.Lookup(hex); ok {
			h.Release()
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("blob %s not in the cache after 30 s", hex)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
