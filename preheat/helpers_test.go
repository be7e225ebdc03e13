package preheat

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/testenv"
)

var bg = context.Background()

// testRegistry is a real registry behind a counting reverse proxy, so tests
// can assert registry egress for blobs.
type testRegistry struct {
	URL       string // http://127.0.0.1:port (the proxy)
	Host      string
	blobBytes atomic.Int64
	blobGets  atomic.Int64
}

// startRegistry runs the upstream `registry` binary (REGISTRY_BIN, built by
// `make tools`); without it, go-containerregistry's in-process registry
// stands in so a plain `go test` still exercises everything.
func startRegistry(t *testing.T) *testRegistry {
	t.Helper()
	var backend string
	if bin := os.Getenv("REGISTRY_BIN"); bin != "" {
		dir := t.TempDir()
		addr := testenv.FreeAddr(t)
		cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", dir, addr)
		cfgPath := filepath.Join(dir, "config.yml")
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p := testenv.Start(t, "registry", bin, []string{"serve", cfgPath})
		testenv.WaitHTTP(t, p, "http://"+addr+"/v2/", 20*time.Second)
		backend = "http://" + addr
	} else {
		srv := httptest.NewServer(ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0))))
		t.Cleanup(srv.Close)
		backend = srv.URL
	}
	tr := &testRegistry{}
	bu, _ := url.Parse(backend)
	proxy := httputil.NewSingleHostReverseProxy(bu)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			tr.blobGets.Add(1)
			cw := &countWriter{ResponseWriter: w}
			proxy.ServeHTTP(cw, r)
			tr.blobBytes.Add(cw.n)
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	tr.URL = srv.URL
	tr.Host = strings.TrimPrefix(srv.URL, "http://")
	return tr
}

type countWriter struct {
	http.ResponseWriter
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.ResponseWriter.Write(p)
	c.n += int64(n)
	return n, err
}

// push writes a random image (layers x size bytes) and returns it.
func (tr *testRegistry) push(t *testing.T, repoTag string, size int64, layers int) v1.Image {
	t.Helper()
	img, err := random.Image(size, int64(layers))
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(tr.Host+"/"+repoTag, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatalf("push %s: %v", repoTag, err)
	}
	return img
}

func blobDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	cfg, _ := img.ConfigName()
	out := []string{cfg.String()}
	ls, _ := img.Layers()
	for _, l := range ls {
		d, _ := l.Digest()
		out = append(out, d.String())
	}
	return out
}

// testAgent is a small real HTTPS server speaking the agent contract as a
// cluster member (its identity from testIdentity(ID), TLS with the
// cluster's ServerTLS): it fetches the blob from the registry with the
// given headers, verifies the digest and writes it into its cache
// directory.
type testAgent struct {
	ID, Group string
	Dir       string
	srv       *httptest.Server
	fetches   atomic.Int64
	mu        sync.Mutex
	headers   []http.Header // registry request headers seen
	gate      chan struct{} // when non-nil, each fetch waits for a value
	started   chan string   // when non-nil, receives digests as fetches start
	// status, when set, is answered to every fetch with body (an agent
	// relaying a registry's refusal).
	status int
	body   string
}

// testAuthority is the cluster of this package's tests (testClusterSecret).
var testAuthority = func() *cluster.Authority {
	a, err := cluster.NewAuthority(testClusterSecret)
	if err != nil {
		panic(err)
	}
	return a
}()

var testIdentities sync.Map // node id → *cluster.Identity

// testIdentity is the member identity of a test node: one key per node id
// for the whole test binary, as a real node keeps its node.key.
func testIdentity(id string) *cluster.Identity {
	if v, ok := testIdentities.Load(id); ok {
		return v.(*cluster.Identity)
	}
	ident, err := testAuthority.Issue(id, nil)
	if err != nil {
		panic(err)
	}
	v, _ := testIdentities.LoadOrStore(id, ident)
	return v.(*cluster.Identity)
}

func startAgent(t *testing.T, id, group string) *testAgent {
	t.Helper()
	return startAgentAs(t, id, group, testIdentity(id))
}

// startAgentAs runs a test agent presenting ident at its TLS listener.
func startAgentAs(t *testing.T, id, group string, ident *cluster.Identity) *testAgent {
	t.Helper()
	a := &testAgent{ID: id, Group: group, Dir: t.TempDir()}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(a.serve))
	a.srv.TLS = testAuthority.ServerTLS(ident)
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

func (a *testAgent) URL() string { return a.srv.URL }

func (a *testAgent) serve(w http.ResponseWriter, r *http.Request) {
	fail := func(code int, msg string) { httpx.WriteError(w, code, "", msg) }
	if r.URL.Path != nodeapi.FetchPath || r.Method != http.MethodPost {
		fail(404, "not found")
		return
	}
	var req nodeapi.FetchRequest
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		fail(400, err.Error())
		return
	}
	a.fetches.Add(1)
	a.mu.Lock()
	a.headers = append(a.headers, http.Header{"Authorization": {req.Headers["Authorization"]}})
	a.mu.Unlock()
	if a.started != nil {
		a.started <- req.Digest
	}
	if a.gate != nil {
		select {
		case <-a.gate:
		case <-r.Context().Done():
			return
		}
	}
	if a.status != 0 {
		w.WriteHeader(a.status)
		_, _ = io.WriteString(w, a.body)
		return
	}
	path := filepath.Join(a.Dir, strings.ReplaceAll(req.Digest, ":", "_"))
	if st, err := os.Stat(path); err == nil {
		httpx.WriteJSON(w, 200, nodeapi.FetchResponse{Digest: req.Digest, Size: st.Size(), Source: "cache"})
		return
	}
	greq, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, req.Registry+"/v2/"+req.Repository+"/blobs/"+req.Digest, nil)
	for k, v := range req.Headers {
		greq.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(greq)
	if err != nil {
		fail(502, err.Error())
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		fail(502, "registry: "+resp.Status)
		return
	}
	var buf bytes.Buffer
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(&buf, h), resp.Body)
	if err != nil {
		fail(502, err.Error())
		return
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != req.Digest {
		fail(502, "digest mismatch: "+got)
		return
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		fail(500, err.Error())
		return
	}
	httpx.WriteJSON(w, 200, nodeapi.FetchResponse{Digest: req.Digest, Size: n, Source: "http", BytesFromRegistry: n})
}

func (a *testAgent) cached(t *testing.T) map[string]bool {
	t.Helper()
	out := map[string]bool{}
	es, _ := os.ReadDir(a.Dir)
	for _, e := range es {
		out[strings.Replace(e.Name(), "_", ":", 1)] = true
	}
	return out
}

// heartbeat registers a node through the contract: signed with the node's
// test identity, as an agent does.
func heartbeat(t *testing.T, api string, id, addr string, groups ...string) {
	t.Helper()
	if code, msg := heartbeatAs(t, api, testIdentity(id), nodeapi.Heartbeat{ID: id, Address: addr, Groups: groups, CacheFreeBytes: 1 << 30}, time.Now()); code != http.StatusNoContent {
		t.Fatalf("heartbeat %s: %d %s", id, code, msg)
	}
}

// heartbeatAs sends hb signed by ident at the given time and returns the
// status and error message.
func heartbeatAs(t *testing.T, api string, ident *cluster.Identity, hb nodeapi.Heartbeat, at time.Time) (int, string) {
	t.Helper()
	b, _ := json.Marshal(hb)
	req, _ := http.NewRequest(http.MethodPost, api+nodeapi.HeartbeatPath, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	if ident != nil {
		nodeapi.Sign(req.Header, ident, http.MethodPost, nodeapi.HeartbeatPath, b, at)
	}
	return sendRaw(t, req)
}

func sendRaw(t *testing.T, req *http.Request) (int, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var e httpx.ErrorBody
	raw, _ := io.ReadAll(resp.Body)
	if len(raw) > 0 && json.Unmarshal(raw, &e) != nil {
		t.Fatalf("answer %d is not the JSON error shape: %q", resp.StatusCode, raw)
	}
	if resp.StatusCode >= 400 && (e.Error == "" || e.Code == "") {
		t.Fatalf("error answer %d is not {\"error\",\"code\"}: %q", resp.StatusCode, raw)
	}
	return resp.StatusCode, e.Error
}

// replica is a running preheat service on a loopback port.
type replica struct {
	svc *Service
	URL string
	// stop ends Serve (as a stopped process would) and waits for it.
	stop func()
}

// redisStore is a store on the Redis at addr, built from a redis block as
// preheat builds its own.
func redisStore(t *testing.T, addr string) Store {
	rc := config.DefaultRedis("it:")
	rc.Addrs = []string{addr}
	rdb, err := rc.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { rdb.Close() })
	return NewRedisStore(rdb, rc.KeyPrefix)
}

func testConfig(registry string) Config {
	cfg := DefaultConfig()
	cfg.Registry = registry
	cfg.Cluster.Secret = config.NewSecret(testClusterSecret)
	cfg.HeartbeatTTL = 5 * time.Second
	cfg.LeaseTTL = 600 * time.Millisecond
	cfg.FetchTimeout = 10 * time.Second
	cfg.JobTimeout = 30 * time.Second
	cfg.Retention = time.Minute
	cfg.MaxBodyBytes = 64 << 10
	cfg.Log.Level = "warn"
	return cfg
}

func startReplica(t *testing.T, cfg Config, st Store) *replica {
	t.Helper()
	return startReplicaOn(t, cfg, st, "127.0.0.1:0")
}

// startReplicaOn serves a replica on a listener bound to addr (port 0),
// reached at 127.0.0.1.
func startReplicaOn(t *testing.T, cfg Config, st Store, addr string) *replica {
	t.Helper()
	s, err := New(cfg, Deps{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	r := &replica{svc: s, URL: fmt.Sprintf("http://127.0.0.1:%d", l.Addr().(*net.TCPAddr).Port)}
	if len(cfg.APITokens) > 0 {
		readTokens.Store(r.URL, cfg.APITokens[0].Value())
		t.Cleanup(func() { readTokens.Delete(r.URL) })
	}
	var once sync.Once
	r.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("Serve: %v", err)
			}
		})
	}
	t.Cleanup(r.stop)
	return r
}

// call does an HTTP request with a JSON body and decodes a JSON answer.
func call(t *testing.T, method, u string, hdr map[string]string, body any, out any) int {
	t.Helper()
	return testenv.Call(t, method, u, hdr, body, out)
}

// readTokens maps a test replica's URL to an API token it accepts, so
// helpers that only watch a job read it as an operator would.
var readTokens sync.Map

func readAuth(api string) map[string]string {
	if tok, ok := readTokens.Load(api); ok {
		return map[string]string{"Authorization": "Bearer " + tok.(string)}
	}
	return nil
}

func waitJob(t *testing.T, api string, id int64, want JobState, timeout time.Duration) *JobView {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var v JobView
	for time.Now().Before(deadline) {
		v = JobView{}
		call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", api, id), readAuth(api), nil, &v)
		if v.Job != nil && v.State == want {
			return &v
		}
		if v.Job != nil && v.State.Terminal() {
			t.Fatalf("job %d ended %s (%s), want %s", id, v.State, v.Error, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("job %d not %s within %s: %+v", id, want, timeout, v.Job)
	return nil
}
