// Package lazy is `make bench`'s lazy-pull and big-artifact benchmark:
// random 1 MiB Range reads of a 1 GiB blob through `shoal agent`
// processes (cold, from a peer, 8 agents at once), against a direct Range
// request to `shoal registry` in the same run. It reports; it asserts no
// speeds.
package lazy

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

var (
	clusterSecret = secret.Generate()
	trackerSecret = secret.Generate()
)

const repo = "bench/lazy"

// env is a tracker, a registry and the agents a scenario starts.
type env struct {
	t       *testing.T
	bin     string
	regAddr string
	trAddr  string
	mu      sync.Mutex
	seq     int
}

type agent struct {
	id     string
	mirror string
	p      *testenv.Process
	pid    int
	cache  string
	cfg    string
}

func startEnv(t *testing.T, pieceLen int) *env {
	e := &env{t: t, bin: testenv.ShoalBinary(t)}
	e.trAddr = testenv.FreeAddr(t)
	dir := t.TempDir()
	trCfg := filepath.Join(dir, "tracker.yml")
	os.WriteFile(trCfg, fmt.Appendf(nil, "addr: %s\nsecrets: [%s]\nallowUnsigned: true\ninterval: 10s\nlog: {level: warn}\n", e.trAddr, trackerSecret), 0o644)
	tr := testenv.Start(t, "tracker", e.bin, []string{"tracker", "--config", trCfg})
	testenv.WaitHTTP(t, tr, "http://"+e.trAddr+"/healthz", 60*time.Second)
	e.regAddr = testenv.FreeAddr(t)
	regCfg := filepath.Join(dir, "registry.yml")
	os.WriteFile(regCfg, []byte(testenv.RegistryConfig{
		Addr: e.regAddr, Root: filepath.Join(dir, "data"), HTTPSecret: trackerSecret,
		TrackerURL: "http://" + e.trAddr + "/announce", TrackerSecret: trackerSecret,
		ClusterSecret: clusterSecret, SeederListen: testenv.FreeAddr(t), URLExpiry: "10m",
		PieceLength: pieceLen,
	}.YAML()), 0o644)
	reg := testenv.Start(t, "registry", e.bin, []string{"registry", "--config", regCfg})
	testenv.WaitHTTP(t, reg, "http://"+e.regAddr+"/v2/", 60*time.Second)
	return e
}

// startAgent starts a fresh agent (empty cache unless cache is given).
func (e *env) startAgent(cache string, maxBytes int64) *agent {
	t := e.t
	e.mu.Lock()
	e.seq++
	id := fmt.Sprintf("agent-%d", e.seq)
	e.mu.Unlock()
	if cache == "" {
		cache = t.TempDir()
	}
	a := &agent{id: id, mirror: testenv.FreeAddr(t), cache: cache}
	a.cfg = filepath.Join(t.TempDir(), id+".yml")
	os.WriteFile(a.cfg, fmt.Appendf(nil, `node: {id: %s, groups: [bench]}
cluster: {secret: %q}
mirror: {addr: %s}
control: {addr: %s}
upstreams:
  - {host: %q, url: "http://%s", default: true}
cache: {dir: %q, maxBytes: %d}
p2p: {enabled: true, addr: "127.0.0.1:0"}
log: {level: %s}
`, id, clusterSecret, a.mirror, testenv.FreeAddr(t), e.regAddr, e.regAddr, cache, maxBytes, logLevel()), 0o644)
	a.p = testenv.Start(t, id, e.bin, []string{"agent", "--config", a.cfg})
	testenv.WaitHTTP(t, a.p, "http://"+a.mirror+"/healthz", 60*time.Second)
	a.pid = childPID(t, a.cfg)
	return a
}

// restartAgent starts a's configuration again (its cache included).
func (e *env) restartAgent(a *agent) *agent {
	t := e.t
	b := *a
	b.p = testenv.Start(t, a.id+"-restarted", e.bin, []string{"agent", "--config", a.cfg})
	testenv.WaitHTTP(t, b.p, "http://"+a.mirror+"/healthz", 60*time.Second)
	b.pid = childPID(t, a.cfg)
	return &b
}

// logLevel is the agents' (SHOAL_BENCH_AGENT_LOG, default warn).
func logLevel() string {
	if l := os.Getenv("SHOAL_BENCH_AGENT_LOG"); l != "" {
		return l
	}
	return "warn"
}

// childPID finds the pid of the child of this test process whose command
// line names cfgPath.
func childPID(t *testing.T, cfgPath string) int {
	t.Helper()
	ents, _ := os.ReadDir("/proc")
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmd, []byte(cfgPath)) && bytes.Contains(cmd, []byte("agent\x00")) {
			return pid
		}
	}
	t.Fatalf("no process runs with %s", cfgPath)
	return 0
}

// rssMiB is a process's resident set, MiB.
func rssMiB(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// scrape sums the samples of an agent's /metrics whose line starts with
// prefix.
func scrape(mirror, prefix string) float64 {
	resp, err := http.Get("http://" + mirror + "/metrics")
	if err != nil {
		return 0
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(line, prefix) {
			f := strings.Fields(line)
			v, _ := strconv.ParseFloat(f[len(f)-1], 64)
			sum += v
		}
	}
	return sum
}

type blob struct {
	digest string
	size   int64
}

// upload pushes r as one blob (one streamed PATCH).
func (e *env) upload(r io.Reader) blob {
	t := e.t
	base, _ := url.Parse("http://" + e.regAddr)
	resp, body := do(t, mustReq(http.MethodPost, base.String()+"/v2/"+repo+"/blobs/uploads/", nil))
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", resp.StatusCode, body)
	}
	next, _ := base.Parse(resp.Header.Get("Location"))
	h := sha256.New()
	n := int64(0)
	cr := readerFunc(func(p []byte) (int, error) { k, err := r.Read(p); h.Write(p[:k]); n += int64(k); return k, err })
	req := mustReq(http.MethodPatch, next.String(), cr)
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body = do(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
	}
	dgst := "sha256:" + hex.EncodeToString(h.Sum(nil))
	next, _ = base.Parse(resp.Header.Get("Location"))
	q := next.Query()
	q.Set("digest", dgst)
	next.RawQuery = q.Encode()
	resp, body = do(t, mustReq(http.MethodPut, next.String(), nil))
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("commit upload: %d %s", resp.StatusCode, body)
	}
	return blob{digest: dgst, size: n}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }

func mustReq(method, u string, body io.Reader) *http.Request {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		panic(err)
	}
	return req
}

func do(t *testing.T, req *http.Request) (*http.Response, string) {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b)
}

// rangeTimes is one Range read: time to the first byte and to the last.
type rangeTimes struct{ first, last time.Duration }

// readRange GETs bytes [off, off+n) of b from host over client c and checks
// them against want (the blob's bytes at off).
func readRange(ctx context.Context, c *http.Client, host string, b blob, off, n int64, want []byte) (rangeTimes, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/"+repo+"/blobs/"+b.digest, nil)
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	start := time.Now()
	resp, err := c.Do(req)
	if err != nil {
		return rangeTimes{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return rangeTimes{}, fmt.Errorf("GET %s Range %d+%d: %s %s", host, off, n, resp.Status, msg)
	}
	buf := make([]byte, n)
	k, err := io.ReadFull(resp.Body, buf[:1])
	first := time.Since(start)
	if err == nil {
		_, err = io.ReadFull(resp.Body, buf[k:])
	}
	last := time.Since(start)
	if err != nil {
		return rangeTimes{}, fmt.Errorf("GET %s Range %d+%d: %w", host, off, n, err)
	}
	if want != nil && !bytes.Equal(buf, want) {
		return rangeTimes{}, fmt.Errorf("GET %s Range %d+%d: wrong bytes", host, off, n)
	}
	return rangeTimes{first: first, last: last}, nil
}
