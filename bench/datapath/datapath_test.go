// Package datapath is `make bench`'s data-path benchmark: one blob's way
// from `shoal registry` through `shoal agent` processes and between agents,
// with wall time, CPU per GiB of every process and the registry's egress.
// It reports; it asserts no speeds.
package datapath

import (
	"bytes"
	"context"
	crand "crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"github.com/shoalproject/shoal/internal/secret"
	"io"
	"math"
	"math/rand/v2"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoalproject/shoal/internal/testenv"
)

// clusterSecret is the join secret of every Shoal process this test binary
// starts.
var (
	clusterSecret = secret.Generate()
	// trackerSecret signs announce tokens (registry) and checks them (tracker).
	trackerSecret = secret.Generate()
)

const (
	nAgents   = 8
	clkTck    = 100 // getconf CLK_TCK
	repo      = "bench/datapath"
	gib       = float64(1 << 30)
	mib       = float64(1 << 20)
	agentsMax = 4 << 30 // cache.maxBytes
)

// A guess of each scenario's duration per GiB on a 2-vCPU machine, for the
// length of CPU profiles when no smaller size has run yet.
var guessSecondsPerGiB = map[string]float64{"direct": 3, "direct+write": 4, "cold": 12, "peer": 8, "warm": 3, "swarm8": 40}

// TestDatapathBenchmark runs only when SHOAL_BENCH_OUT names a directory
// (`make bench`, `make bench-datapath`). SHOAL_BENCH_SIZES lists blob sizes
// in MiB (default "64,1024"); SHOAL_BENCH_PROFILE=1 captures a CPU profile
// of every process involved in every scenario; SHOAL_BENCH_CACHEDIR puts
// the agents' caches under another directory (e.g. a tmpfs).
func TestDatapathBenchmark(t *testing.T) {
	out := os.Getenv("SHOAL_BENCH_OUT")
	if out == "" {
		t.Skip("benchmark: run through `make bench` or `make bench-datapath` (SHOAL_BENCH_OUT unset)")
	}
	sizes := parseSizes(t, os.Getenv("SHOAL_BENCH_SIZES"))
	e := &env{t: t, bin: testenv.ShoalBinary(t), profile: os.Getenv("SHOAL_BENCH_PROFILE") == "1"}
	if e.profile {
		e.profDir = filepath.Join(out, "profiles")
		if err := os.MkdirAll(e.profDir, 0o755); err != nil {
			t.Fatal(err)
		}
		e.perf, _ = exec.LookPath("perf")
	}
	e.start(os.Getenv("SHOAL_BENCH_CACHEDIR"))
	if e.profile {
		var pp, perf []string
		for _, p := range e.all() {
			if p.debug != "" {
				pp = append(pp, p.name)
			} else {
				perf = append(perf, p.name)
			}
		}
		msg := fmt.Sprintf("profiled run (numbers include profiler overhead): pprof via debug listener for [%s]", strings.Join(pp, " "))
		if len(perf) > 0 {
			how := "no profiles (perf(1) not found)"
			if e.perf != "" {
				how = "perf record -F 199 -g"
			}
			msg += fmt.Sprintf("; %s for [%s]", how, strings.Join(perf, " "))
		}
		e.note("%s", msg)
	}

	res := result{
		Date:    time.Now().UTC().Format(time.RFC3339),
		Version: e.version(),
		Binary:  e.bin,
		Profile: e.profile,
		Notes:   e.notes,
	}
	var prev *sizeResult
	for _, size := range sizes {
		sr := e.runSize(size, prev)
		res.Sizes = append(res.Sizes, sr)
		prev = &res.Sizes[len(res.Sizes)-1]
	}
	res.Notes = e.notes

	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	j, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "datapath.json"), append(j, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	md := res.markdown()
	if err := os.WriteFile(filepath.Join(out, "datapath.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + md)
	if e.profile {
		e.printTops(res)
	}
}

func parseSizes(t *testing.T, s string) []int64 {
	if s == "" {
		s = "64,1024"
	}
	var sizes []int64
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.ParseInt(strings.TrimSpace(f), 10, 64)
		if err != nil || n <= 0 {
			t.Fatalf("SHOAL_BENCH_SIZES=%q: sizes are MiB, comma-separated", s)
		}
		sizes = append(sizes, n<<20)
	}
	return sizes
}

// ---- processes ----

type proc struct {
	name   string
	p      *testenv.Process
	pid    int
	debug  string // pprof listener host:port, "" without
	mirror string // agents: mirror host:port
}

type env struct {
	t       *testing.T
	bin     string
	profile bool
	profDir string
	perf    string // perf(1), for processes without a debug listener
	notes   []string

	reg     *proc
	regAddr string
	tracker *proc
	agents  []*proc
	// storeDir stands for a runtime's content store (direct+write), on
	// the filesystem of the agents' caches.
	storeDir string
}

func (e *env) note(format string, args ...any) {
	s := fmt.Sprintf(format, args...)
	e.t.Log("note: " + s)
	e.notes = append(e.notes, s)
}

func (e *env) version() string {
	out, err := exec.Command(e.bin, "version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(out))
}

func (e *env) all() []*proc {
	return append([]*proc{e.reg, e.tracker}, e.agents...)
}

// launch starts a shoal subcommand with the config cfg(debugAddr) and waits
// until health answers. With profiling on it first tries a debug listener;
// a binary whose config does not know the key yet exits at start, and the
// process is started again without one.
func (e *env) launch(name, sub string, cfg func(debug string) string, health string, tryDebug bool) (*proc, bool) {
	t := e.t
	t.Helper()
	dir := t.TempDir()
	debug := ""
	if e.profile && tryDebug {
		debug = testenv.FreeAddr(t)
	}
	for {
		path := filepath.Join(dir, name+".yml")
		if err := os.WriteFile(path, []byte(cfg(debug)), 0o644); err != nil {
			t.Fatal(err)
		}
		p := testenv.Start(t, name, e.bin, []string{sub, "--config", path})
		if waitHTTP(p, health, 60*time.Second) {
			pid := childPID(t, path)
			return &proc{name: name, p: p, pid: pid, debug: debug}, debug != ""
		}
		if !p.Exited() {
			t.Fatalf("%s: %s did not answer within 60s\n%s", name, health, p.Output())
		}
		if debug != "" && strings.Contains(p.Output(), "debug") {
			msg := lastLine(p.Output())
			if i := strings.Index(msg, "field debug"); i >= 0 {
				msg = strings.TrimRight(msg[i:], `"`)
			}
			e.note("%s: this binary's config has no debug listener (%s)", name, msg)
			debug = ""
			tryDebug = false
			continue
		}
		t.Fatalf("%s exited at start\n%s", name, p.Output())
	}
}

func lastLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// waitHTTP is testenv.WaitHTTP without failing the test when the process
// exits, so that launch can retry without a debug listener.
func waitHTTP(p *testenv.Process, u string, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if testenv.HTTPAnswers(context.Background(), http.DefaultClient, u) == nil {
			return true
		}
		if p.Exited() {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// childPID finds the pid of the child of this test process whose command
// line names cfgPath (testenv.Process does not expose it).
func childPID(t *testing.T, cfgPath string) int {
	t.Helper()
	self := os.Getpid()
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	for _, ent := range ents {
		pid, err := strconv.Atoi(ent.Name())
		if err != nil {
			continue
		}
		st, err := readStat(pid)
		if err != nil || st.ppid != self {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err == nil && bytes.Contains(cmd, []byte(cfgPath)) {
			return pid
		}
	}
	t.Fatalf("no child process runs with %s", cfgPath)
	return 0
}

func (e *env) start(cacheRoot string) {
	t := e.t
	trAddr := testenv.FreeAddr(t)
	e.tracker, _ = e.launch("tracker", "tracker", func(debug string) string {
		s := fmt.Sprintf("addr: %s\nsecrets: [%s]\nallowUnsigned: true\ninterval: 10s\nlog: {level: warn}\n", trAddr, trackerSecret)
		if debug != "" {
			s += fmt.Sprintf("debug: {addr: %s}\n", debug)
		}
		return s
	}, "http://"+trAddr+"/healthz", true)

	e.regAddr = testenv.FreeAddr(t)
	seedAddr := testenv.FreeAddr(t)
	regData := filepath.Join(t.TempDir(), "data")
	e.reg, _ = e.launch("registry", "registry", func(debug string) string {
		return testenv.RegistryConfig{
			Addr:          e.regAddr,
			Root:          regData,
			HTTPSecret:    trackerSecret,
			TrackerURL:    "http://" + trAddr + "/announce",
			TrackerSecret: trackerSecret,
			ClusterSecret: clusterSecret,
			SeederListen:  seedAddr,
			Debug:         debug,
			URLExpiry:     "5m",
		}.YAML()
	}, "http://"+e.regAddr+"/v2/", true)

	names := "abcdefghijklmnopqrstuvwxyz"
	tryDebug := true // the first agent finds out whether the binary takes a debug listener
	e.storeDir = t.TempDir()
	if cacheRoot != "" {
		var err error
		if e.storeDir, err = os.MkdirTemp(cacheRoot, "shoal-datapath-store-"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(e.storeDir) })
	}
	for i := 0; i < nAgents; i++ {
		id := "agent-" + names[i:i+1]
		mirror := testenv.FreeAddr(t)
		control := testenv.FreeAddr(t)
		cache := t.TempDir()
		if cacheRoot != "" {
			var err error
			if cache, err = os.MkdirTemp(cacheRoot, "shoal-datapath-"+id+"-"); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { os.RemoveAll(cache) })
		}
		p, dbg := e.launch(id, "agent", func(debug string) string {
			s := fmt.Sprintf(`node: {id: %s, groups: [bench]}
cluster: {secret: %q}
mirror: {addr: %s}
control: {addr: %s}
upstreams:
  - {host: %q, url: "http://%s", default: true}
cache: {dir: %q, maxBytes: %d}
p2p: {enabled: true, addr: "127.0.0.1:0"}
log: {level: warn}
`, id, clusterSecret, mirror, control, e.regAddr, e.regAddr, cache, int64(agentsMax))
			if debug != "" {
				s += fmt.Sprintf("debug: {addr: %s}\n", debug)
			}
			return s
		}, "http://"+mirror+"/healthz", tryDebug)
		p.mirror = mirror
		tryDebug = dbg
		e.agents = append(e.agents, p)
	}
}

// ---- /proc ----

type statInfo struct {
	ppid int
	cpu  float64 // utime+stime, seconds
}

func readStat(pid int) (statInfo, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return statInfo{}, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return statInfo{}, fmt.Errorf("/proc/%d/stat: no comm", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state): ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return statInfo{}, fmt.Errorf("/proc/%d/stat: short", pid)
	}
	ppid, _ := strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return statInfo{ppid: ppid, cpu: float64(ut+st) / clkTck}, nil
}

func cpuOf(pid int) float64 {
	s, err := readStat(pid)
	if err != nil {
		return math.NaN()
	}
	return s.cpu
}

// sysCPU is the machine's busy and steal time from /proc/stat, seconds.
type sysCPU struct{ busy, steal float64 }

func readSysCPU() sysCPU {
	b, _ := os.ReadFile("/proc/stat")
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line) // cpu user nice system idle iowait irq softirq steal guest guest_nice
	if len(f) < 9 || f[0] != "cpu" {
		return sysCPU{}
	}
	v := func(i int) float64 { n, _ := strconv.ParseFloat(f[i], 64); return n / clkTck }
	return sysCPU{busy: v(1) + v(2) + v(3) + v(6) + v(7), steal: v(8)}
}

type ioInfo struct{ wchar, writeBytes int64 }

func readIO(pid int) ioInfo {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/io", pid))
	var r ioInfo
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ": ")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
		switch k {
		case "wchar":
			r.wchar = n
		case "write_bytes":
			r.writeBytes = n
		}
	}
	return r
}

type snap struct {
	at     time.Time
	sys    sysCPU
	cpu    map[string]float64 // per process, plus "client" (this test process)
	regIO  ioInfo
	regLog int
	logs   int            // bytes every process printed
	outLen map[string]int // per process
}

func (e *env) snapshot() snap {
	s := snap{at: time.Now(), sys: readSysCPU(), cpu: map[string]float64{}, outLen: map[string]int{}}
	for _, p := range e.all() {
		s.cpu[p.name] = cpuOf(p.pid)
		s.outLen[p.name] = len(p.p.Output())
		s.logs += s.outLen[p.name]
	}
	s.cpu["client"] = cpuOf(os.Getpid())
	s.regIO = readIO(e.reg.pid)
	s.regLog = len(e.reg.p.Output())
	return s
}

// settle flushes dirty pages (so writeback of the previous scenario's
// blobs does not run during the next) and waits until the processes are
// idle: at most 2 ticks of CPU among them in 300 ms, 15 s at most.
func (e *env) settle() {
	syscall.Sync()
	deadline := time.Now().Add(15 * time.Second)
	for {
		a := e.snapshot()
		time.Sleep(300 * time.Millisecond)
		b := e.snapshot()
		busy := 0.0
		for k, v := range b.cpu {
			if k != "client" {
				busy += v - a.cpu[k]
			}
		}
		if busy <= 0.021 {
			return
		}
		if time.Now().After(deadline) {
			e.t.Logf("processes still busy (%.2f CPU-s in 300 ms) after 15 s; measuring anyway", busy)
			return
		}
	}
}

// ---- metrics ----

// scrape reads the Prometheus text at u into series → value.
func scrape(u string) map[string]float64 {
	m := map[string]float64{}
	resp, err := http.Get(u)
	if err != nil {
		return m
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, l := range strings.Split(string(b), "\n") {
		if l == "" || l[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		if v, err := strconv.ParseFloat(l[i+1:], 64); err == nil {
			m[l[:i]] = v
		}
	}
	return m
}

// The series kept from each process's /metrics (absent ones are skipped:
// the agent is being rewritten and may rename them).
var agentSeries = map[string]string{
	`shoal_agent_blob_bytes_total{source="peer"}`:     "from_peers",
	`shoal_agent_blob_bytes_total{source="registry"}`: "from_registry",
	`shoal_agent_blob_bytes_total{source="cache"}`:    "served_from_cache",
	`shoal_agent_uploaded_bytes_total`:                "uploaded_to_peers",
}

const seederSeries = `shoal_registry_seeder_uploaded_bytes_total`

func (e *env) metrics() map[string]map[string]float64 {
	out := map[string]map[string]float64{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, a := range e.agents {
		wg.Add(1)
		go func() {
			defer wg.Done()
			m := scrape("http://" + a.mirror + "/metrics")
			r := map[string]float64{}
			for series, key := range agentSeries {
				if v, ok := m[series]; ok {
					r[key] = v
				}
			}
			mu.Lock()
			out[a.name] = r
			mu.Unlock()
		}()
	}
	wg.Wait()
	m := scrape("http://" + e.regAddr + "/metrics")
	if v, ok := m[seederSeries]; ok {
		out["registry"] = map[string]float64{"seeder_uploaded": v}
	}
	return out
}

// ---- blobs ----

type blob struct {
	digest string
	size   int64
}

// push uploads size fresh random bytes as one streamed PATCH, then an image
// manifest with the blob as its only layer, so the registry seeds it.
func (e *env) push(tag string, size int64) blob {
	t := e.t
	var seed [32]byte
	crand.Read(seed[:])
	layer := e.upload(io.LimitReader(rand.NewChaCha8(seed), size))
	cfg, _ := json.Marshal(v1.ConfigFile{
		Architecture: "amd64", OS: "linux",
		RootFS: v1.RootFS{Type: "layers", DiffIDs: []v1.Hash{mustHash(t, layer.digest)}},
	})
	conf := e.upload(bytes.NewReader(cfg))
	man, _ := json.Marshal(v1.Manifest{
		SchemaVersion: 2,
		MediaType:     types.OCIManifestSchema1,
		Config:        v1.Descriptor{MediaType: types.OCIConfigJSON, Digest: mustHash(t, conf.digest), Size: conf.size},
		Layers:        []v1.Descriptor{{MediaType: types.OCIUncompressedLayer, Digest: mustHash(t, layer.digest), Size: layer.size}},
	})
	req, _ := http.NewRequest(http.MethodPut, "http://"+e.regAddr+"/v2/"+repo+"/manifests/"+tag, bytes.NewReader(man))
	req.Header.Set("Content-Type", string(types.OCIManifestSchema1))
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT manifest %s: %d %s", tag, resp.StatusCode, body)
	}
	return layer
}

func mustHash(t *testing.T, s string) v1.Hash {
	h, err := v1.NewHash(s)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func (e *env) upload(r io.Reader) blob {
	t := e.t
	base, _ := url.Parse("http://" + e.regAddr)
	req, _ := http.NewRequest(http.MethodPost, base.String()+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, body := do(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", resp.StatusCode, body)
	}
	next, _ := base.Parse(resp.Header.Get("Location"))
	h := sha256.New()
	cr := &countReader{r: io.TeeReader(r, h)}
	req, _ = http.NewRequest(http.MethodPatch, next.String(), cr)
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
	req, _ = http.NewRequest(http.MethodPut, next.String(), nil)
	resp, body = do(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("commit upload: %d %s", resp.StatusCode, body)
	}
	return blob{digest: dgst, size: cr.n}
}

type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
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

// get GETs the blob from host (registry or agent mirror) with a fresh
// connection, hashes the body in this goroutine, discards it, and returns
// the time from request to verified last byte.
func get(ctx context.Context, host string, b blob) (time.Duration, error) {
	return getTo(ctx, host, b, "")
}

// getTo is get that also writes the body to a new file in dir (when not
// empty), as a runtime writes a layer into its content store. The file is
// kept (until the size's scenarios end), as a runtime keeps the layer and
// an agent its cache: new page-cache memory for every run, like theirs.
func getTo(ctx context.Context, host string, b blob, dir string) (time.Duration, error) {
	tr := &http.Transport{DisableCompression: true}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/v2/"+repo+"/blobs/"+b.digest, nil)
	resp, err := c.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return 0, fmt.Errorf("GET %s: %s %s", req.URL, resp.Status, msg)
	}
	h := sha256.New()
	var w io.Writer = h
	if dir != "" {
		f, err := os.CreateTemp(dir, "layer-")
		if err != nil {
			return 0, err
		}
		defer f.Close()
		w = io.MultiWriter(h, f)
	}
	n, err := io.CopyBuffer(w, resp.Body, make([]byte, 1<<20))
	d := time.Since(start)
	if err != nil {
		return 0, fmt.Errorf("GET %s: after %d bytes: %w", req.URL, n, err)
	}
	if n != b.size {
		return 0, fmt.Errorf("GET %s: %d bytes, want %d", req.URL, n, b.size)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != b.digest {
		return 0, fmt.Errorf("GET %s: body has digest %s", req.URL, got)
	}
	return d, nil
}

// ---- scenarios ----

type scenarioResult struct {
	Name     string    `json:"scenario"`
	Runs     int       `json:"runs"`
	WallS    float64   `json:"wall_s"` // best of the runs; swarm8: slowest agent
	WallsS   []float64 `json:"walls_s"`
	ElapsedS float64   `json:"elapsed_s"` // the whole scenario, every run
	MiBs     float64   `json:"mib_s"`     // blob MiB / wall
	XDirect  float64   `json:"x_direct"`  // throughput ÷ direct's (= direct wall ÷ wall)
	// Receiving: the agent the client pulls through; sending: the agent
	// that holds the blob (peer).
	Receiving string `json:"receiving_agent,omitempty"`
	Sending   string `json:"sending_agent,omitempty"`
	// CPU seconds per process over the whole scenario (all runs), from
	// /proc/<pid>/stat; "client" is this test process (GETs + sha256).
	CPUS map[string]float64 `json:"cpu_s"`
	// CPU seconds per GiB of blob delivered to a client (per run).
	CPUPerGiB map[string]float64 `json:"cpu_s_per_gib"`
	// Registry egress per run: /proc/<pid>/io wchar − write_bytes − log.
	RegistryOut registryOut `json:"registry_out"`
	// Metric deltas per agent (bytes by source) and registry's seeder.
	Metrics  map[string]map[string]float64 `json:"metrics_delta,omitempty"`
	Profiles []string                      `json:"profiles,omitempty"`
	// Machine CPU outside this benchmark's processes during the scenario
	// (/proc/stat busy − the processes' and the client's CPU: other load,
	// kernel threads such as writeback, softirqs not charged to a process),
	// and the hypervisor's steal time. High values mean a noisy run.
	OtherCPUS float64 `json:"other_cpu_s"`
	StealS    float64 `json:"steal_s"`
	// What each process logged during the scenario (warn level and up).
	Logs map[string]string `json:"logs,omitempty"`
}

type registryOut struct {
	WcharBytes      int64   `json:"wchar_bytes"`
	WriteBytes      int64   `json:"write_bytes"`
	LogBytes        int64   `json:"log_bytes"`
	NetBytes        int64   `json:"net_bytes"` // wchar − write_bytes − log, whole scenario
	NetMiBPerRun    float64 `json:"net_mib_per_run"`
	SeederUploadMiB float64 `json:"seeder_uploaded_mib,omitempty"`
}

type sizeResult struct {
	SizeMiB   float64          `json:"size_mib"`
	Scenarios []scenarioResult `json:"scenarios"`
	Targets   []target         `json:"targets"`
	// Registry egress of the direct GET ÷ blob size: validates the measure.
	EgressCheck float64 `json:"registry_out_direct_over_size"`
	AllLogBytes int64   `json:"log_bytes_all_processes"`
}

type target struct {
	What     string  `json:"target"`
	Measured float64 `json:"measured"`
	Limit    float64 `json:"limit"`
	AtLeast  bool    `json:"at_least"`
	Met      bool    `json:"met"`
	Unit     string  `json:"unit"`
}

type result struct {
	Date    string       `json:"date"`
	Version string       `json:"shoal_version"`
	Binary  string       `json:"binary"`
	Profile bool         `json:"profiled"`
	Sizes   []sizeResult `json:"sizes"`
	Notes   []string     `json:"notes,omitempty"`
}

func sizeLabel(size int64) string {
	if size >= 1<<30 && size%(1<<30) == 0 {
		return fmt.Sprintf("%dGiB", size>>30)
	}
	return fmt.Sprintf("%dMiB", size>>20)
}

func (e *env) runSize(size int64, prev *sizeResult) sizeResult {
	t := e.t
	label := sizeLabel(size)
	t.Logf("==== %s: pushing 3 fresh blobs", label)
	t0 := time.Now()
	bDirect := e.push(label+"-direct", size)
	bChain := e.push(label+"-chain", size) // cold, then peer and warm
	bSwarm := e.push(label+"-swarm8", size)
	t.Logf("pushed in %s", time.Since(t0).Round(time.Millisecond))
	A, B := e.agents[0], e.agents[1]

	expect := func(name string) time.Duration {
		if prev != nil {
			for _, s := range prev.Scenarios {
				if s.Name == name {
					return time.Duration(s.ElapsedS * float64(size) / (prev.SizeMiB * mib) * float64(time.Second))
				}
			}
		}
		return time.Duration(guessSecondsPerGiB[name] * float64(size) / gib * float64(time.Second))
	}
	sr := sizeResult{SizeMiB: float64(size) / mib}
	logs0 := e.snapshot().logs
	run := func(name string, runs int, profiled []*proc, recv, send *proc, f func(ctx context.Context) ([]time.Duration, error)) scenarioResult {
		r := e.scenario(label, name, runs, profiled, expect(name), f)
		if recv != nil {
			r.Receiving = recv.name
		}
		if send != nil {
			r.Sending = send.name
		}
		e.derive(&r, size)
		sr.Scenarios = append(sr.Scenarios, r)
		t.Logf("%-7s %-6s wall %7.3f s  %7.1f MiB/s  registry %.2f CPU-s/GiB  out %.1f MiB/run  %v", label, name, r.WallS, r.MiBs,
			r.CPUPerGiB["registry"], r.RegistryOut.NetMiBPerRun, fmtCPU(r.CPUPerGiB))
		return r
	}
	seq := func(n int, host string, b blob) func(ctx context.Context) ([]time.Duration, error) {
		return func(ctx context.Context) ([]time.Duration, error) {
			var ds []time.Duration
			for i := 0; i < n; i++ {
				d, err := get(ctx, host, b)
				if err != nil {
					return nil, err
				}
				ds = append(ds, d)
			}
			return ds, nil
		}
	}
	direct := run("direct", 3, []*proc{e.reg}, nil, nil, seq(3, e.regAddr, bDirect))
	// What a runtime pulling straight from the registry pays: the layer
	// lands in its content store, on the disk the agents' caches use.
	run("direct+write", 3, []*proc{e.reg}, nil, nil, func(ctx context.Context) ([]time.Duration, error) {
		var ds []time.Duration
		for i := 0; i < 3; i++ {
			d, err := getTo(ctx, e.regAddr, bDirect, e.storeDir)
			if err != nil {
				return nil, err
			}
			ds = append(ds, d)
		}
		return ds, nil
	})
	run("cold", 1, []*proc{e.reg, e.tracker, A}, A, nil, seq(1, A.mirror, bChain))
	run("peer", 1, []*proc{e.reg, e.tracker, A, B}, B, A, seq(1, B.mirror, bChain))
	run("warm", 3, []*proc{e.reg, A}, A, nil, seq(3, A.mirror, bChain))
	run("swarm8", nAgents, append([]*proc{e.reg, e.tracker}, e.agents...), nil, nil, func(ctx context.Context) ([]time.Duration, error) {
		ds := make([]time.Duration, nAgents)
		errs := make([]error, nAgents)
		var wg sync.WaitGroup
		gate := make(chan struct{})
		for i, a := range e.agents {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-gate
				ds[i], errs[i] = get(ctx, a.mirror, bSwarm)
			}()
		}
		close(gate)
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return nil, err
			}
		}
		return ds, nil
	})
	if des, err := os.ReadDir(e.storeDir); err == nil {
		for _, de := range des {
			os.Remove(filepath.Join(e.storeDir, de.Name()))
		}
	}
	sr.AllLogBytes = int64(e.snapshot().logs - logs0)
	sr.EgressCheck = direct.RegistryOut.NetMiBPerRun * mib / float64(size)
	if sr.EgressCheck < 0.98 || sr.EgressCheck > 1.05 {
		e.note("%s: registry egress measure gave %.3f× the blob for a direct GET (expected ≈ 1)", label, sr.EgressCheck)
	}
	for i := range sr.Scenarios {
		s := &sr.Scenarios[i]
		s.XDirect = direct.WallS / s.WallS
	}
	sr.Targets = targets(sr)
	return sr
}

// scenario runs f (runs GETs) between two snapshots, with CPU profiles of
// the profiled processes when profiling is on.
func (e *env) scenario(label, name string, runs int, profiled []*proc, expected time.Duration, f func(ctx context.Context) ([]time.Duration, error)) scenarioResult {
	t := e.t
	e.settle()
	m0 := e.metrics()

	// Profiles: the pprof handler samples for a fixed number of seconds, so
	// ask for a bit more than the scenario is expected to take.
	secs := int(math.Ceil(expected.Seconds()*1.3)) + 1
	var pwg sync.WaitGroup
	var files []string
	var fmu sync.Mutex
	if e.profile {
		for _, p := range profiled {
			base := filepath.Join(e.profDir, fmt.Sprintf("%s-%s-%s", label, name, p.name))
			var prof func() (string, error)
			switch {
			case p.debug != "":
				prof = func() (string, error) { return base + ".pprof", fetchProfile(p.debug, secs, base+".pprof") }
			case e.perf != "":
				// No debug listener in this binary: perf samples the process
				// (user and kernel stacks) for the same time instead.
				prof = func() (string, error) {
					out, err := exec.Command(e.perf, "record", "-q", "-F", "199", "-g", "-p", strconv.Itoa(p.pid),
						"-o", base+".perf.data", "--", "sleep", strconv.Itoa(secs)).CombinedOutput()
					if err != nil {
						err = fmt.Errorf("perf record: %v: %s", err, bytes.TrimSpace(out))
					}
					return base + ".perf.data", err
				}
			default:
				continue
			}
			pwg.Add(1)
			go func() {
				defer pwg.Done()
				file, err := prof()
				if err != nil {
					t.Logf("profile of %s: %v", p.name, err)
					return
				}
				fmu.Lock()
				files = append(files, file)
				fmu.Unlock()
			}()
		}
		time.Sleep(300 * time.Millisecond) // let the profilers start
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	s0 := e.snapshot()
	ds, err := f(ctx)
	s1 := e.snapshot()
	if err != nil {
		t.Fatalf("%s %s: %v", label, name, err)
	}
	m1 := e.metrics()
	elapsed := s1.at.Sub(s0.at)
	if e.profile && elapsed > time.Duration(secs)*time.Second {
		e.note("%s %s took %.1f s; its profiles cover the first %d s", label, name, elapsed.Seconds(), secs)
	}
	pwg.Wait()
	sort.Strings(files)

	r := scenarioResult{Name: name, Runs: runs, ElapsedS: elapsed.Seconds(), CPUS: map[string]float64{}, Profiles: files}
	for _, d := range ds {
		r.WallsS = append(r.WallsS, d.Seconds())
	}
	ours := 0.0
	for k, v := range s1.cpu {
		r.CPUS[k] = round3(v - s0.cpu[k])
		ours += v - s0.cpu[k]
	}
	r.OtherCPUS = round3(s1.sys.busy - s0.sys.busy - ours)
	r.StealS = round3(s1.sys.steal - s0.sys.steal)
	ro := &r.RegistryOut
	ro.WcharBytes = s1.regIO.wchar - s0.regIO.wchar
	ro.WriteBytes = s1.regIO.writeBytes - s0.regIO.writeBytes
	ro.LogBytes = int64(s1.regLog - s0.regLog)
	ro.NetBytes = ro.WcharBytes - ro.WriteBytes - ro.LogBytes
	for _, p := range e.all() {
		if out := p.p.Output(); s1.outLen[p.name] > s0.outLen[p.name] && len(out) >= s1.outLen[p.name] {
			if r.Logs == nil {
				r.Logs = map[string]string{}
			}
			l := out[s0.outLen[p.name]:s1.outLen[p.name]]
			if len(l) > 2000 {
				l = l[:2000] + "…"
			}
			r.Logs[p.name] = l
			t.Logf("%s %s: %s logged:\n%s", label, name, p.name, l)
		}
	}
	r.Metrics = map[string]map[string]float64{}
	for p, after := range m1 {
		d := map[string]float64{}
		for k, v := range after {
			if dv := v - m0[p][k]; dv != 0 {
				d[k] = dv
			}
		}
		if len(d) > 0 {
			r.Metrics[p] = d
		}
	}
	if v, ok := r.Metrics["registry"]["seeder_uploaded"]; ok {
		ro.SeederUploadMiB = round3(v / mib)
	}
	return r
}

func fetchProfile(debug string, secs int, file string) error {
	c := &http.Client{Timeout: time.Duration(secs)*time.Second + time.Minute}
	resp, err := c.Get(fmt.Sprintf("http://%s/debug/pprof/profile?seconds=%d", debug, secs))
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(b))
	}
	return os.WriteFile(file, b, 0o644)
}

func round3(v float64) float64 { return math.Round(v*1000) / 1000 }

// derive fills wall, throughput and the per-GiB numbers.
func (e *env) derive(r *scenarioResult, size int64) {
	g := float64(size) / gib
	r.WallS = r.WallsS[0]
	for _, w := range r.WallsS {
		if r.Name == "swarm8" {
			r.WallS = max(r.WallS, w)
		} else {
			r.WallS = min(r.WallS, w)
		}
	}
	r.MiBs = float64(size) / mib / r.WallS
	// Sequential runs: CPU and egress per run. swarm8: the registry per GiB
	// of blob (one copy), agents per GiB each received.
	per := float64(r.Runs)
	if r.Name == "swarm8" {
		per = 1
	}
	pg := map[string]float64{
		"registry": r.CPUS["registry"] / per / g,
		"tracker":  r.CPUS["tracker"] / per / g,
		"client":   r.CPUS["client"] / float64(r.Runs) / g,
	}
	if r.Receiving != "" {
		pg["receiving_agent"] = r.CPUS[r.Receiving] / per / g
	}
	if r.Sending != "" {
		pg["sending_agent"] = r.CPUS[r.Sending] / per / g
	}
	if r.Name == "swarm8" {
		sum, mx := 0.0, 0.0
		for _, a := range e.agents {
			sum += r.CPUS[a.name]
			mx = max(mx, r.CPUS[a.name])
		}
		pg["agents_total"] = sum / g
		pg["agents_mean"] = sum / float64(len(e.agents)) / g
		pg["agents_max"] = mx / g
	}
	for k, v := range pg {
		pg[k] = round3(v)
	}
	r.CPUPerGiB = pg
	r.RegistryOut.NetMiBPerRun = round3(float64(r.RegistryOut.NetBytes) / per / mib)
}

func fmtCPU(m map[string]float64) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%.2f ", k, m[k])
	}
	return strings.TrimSpace(b.String())
}

func (sr sizeResult) get(name string) *scenarioResult {
	for i := range sr.Scenarios {
		if sr.Scenarios[i].Name == name {
			return &sr.Scenarios[i]
		}
	}
	return nil
}

func targets(sr sizeResult) []target {
	d, c, p := sr.get("direct"), sr.get("cold"), sr.get("peer")
	mk := func(what string, v, limit float64, atLeast bool, unit string) target {
		met := v <= limit
		if atLeast {
			met = v >= limit
		}
		return target{What: what, Measured: round3(v), Limit: limit, AtLeast: atLeast, Met: met, Unit: unit}
	}
	return []target{
		mk("peer pull throughput ÷ direct", p.XDirect, 0.5, true, "×"),
		mk("peer: receiving agent CPU-s/GiB", p.CPUPerGiB["receiving_agent"], 1.0, false, "CPU-s/GiB"),
		mk("peer: sending agent CPU-s/GiB", p.CPUPerGiB["sending_agent"], 0.5, false, "CPU-s/GiB"),
		mk("cold pull throughput ÷ direct", c.XDirect, 0.8, true, "×"),
		mk("cold: registry CPU per byte ÷ direct's", c.CPUPerGiB["registry"]/d.CPUPerGiB["registry"], 2.0, false, "×"),
	}
}

// ---- output ----

func (res result) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# Data path: one blob through registry, agents and peers

%s, %s. Every process is real and on loopback: `+"`shoal registry`"+` (filesystem
storage, p2p middleware, seeder on, log level warn, access log off), `+"`shoal tracker`"+`
(memory store) and %d `+"`shoal agent`"+` processes (log level warn, cache on the
same disk), plus the Go client, all sharing this machine's 2 vCPUs. Ratios are
against the direct GET of the same size in the same run. Every scenario
pulls a freshly pushed random blob, except peer and warm, which pull cold's
blob by design.

- **Wall**: request to the last byte of a Go HTTP GET whose body is sha256-
  verified and discarded in the reading goroutine (client CPU is reported
  separately below). direct and warm: best of 3; swarm8: the slowest of %d
  agents that GET one new blob at once.
- **Scenarios**: direct = GET from the registry; cold = through agent A,
  nothing cached; peer = through a fresh agent B while A holds the blob;
  warm = through A again; swarm8 = through %d agents at once.
- **CPU-s/GiB**: utime+stime deltas of /proc/<pid>/stat (10 ms ticks) over
  the scenario, per GiB delivered per run (direct, warm: mean of 3 runs).
  Receiving agent: the one the client pulls through; sending agent: the
  peer holding the blob. swarm8, per GiB of blob: the registry, all 8
  agents together, their mean and the busiest one.
- **Registry MiB out**: /proc/<pid>/io wchar delta (socket writes and
  sendfile) minus write_bytes (file writes) minus the bytes it logged, per
  run. Check: the direct GET gives that ÷ blob size in the "egress check" line.

`, res.Version, res.Date, nAgents, nAgents, nAgents)
	for _, sr := range res.Sizes {
		fmt.Fprintf(&b, "## %s\n\n", sizeLabel(int64(sr.SizeMiB*mib)))
		b.WriteString("| scenario | wall s | MiB/s | × direct | registry CPU-s/GiB | receiving agent CPU-s/GiB | sending agent CPU-s/GiB | registry MiB out |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|\n")
		for _, s := range sr.Scenarios {
			recv, send := "—", "—"
			if v, ok := s.CPUPerGiB["receiving_agent"]; ok {
				recv = fmt.Sprintf("%.2f", v)
			}
			if v, ok := s.CPUPerGiB["sending_agent"]; ok {
				send = fmt.Sprintf("%.2f", v)
			}
			if s.Name == "swarm8" {
				recv = fmt.Sprintf("all %.1f; mean %.2f, max %.2f", s.CPUPerGiB["agents_total"], s.CPUPerGiB["agents_mean"], s.CPUPerGiB["agents_max"])
				send = "(in receiving)"
			}
			fmt.Fprintf(&b, "| %s | %.3f | %.0f | %.2f | %.2f | %s | %s | %.1f |\n",
				s.Name, s.WallS, s.MiBs, s.XDirect, s.CPUPerGiB["registry"], recv, send, s.RegistryOut.NetMiBPerRun)
		}
		b.WriteString("\n| target | measured | limit | met |\n|---|---|---|---|\n")
		for _, tg := range sr.Targets {
			op := "≤"
			if tg.AtLeast {
				op = "≥"
			}
			met := "no"
			if tg.Met {
				met = "yes"
			}
			fmt.Fprintf(&b, "| %s | %.2f | %s %.1f | %s |\n", tg.What, tg.Measured, op, tg.Limit, met)
		}
		var regLog, regFile int64
		for _, s := range sr.Scenarios {
			regLog += s.RegistryOut.LogBytes
			regFile += s.RegistryOut.WriteBytes
		}
		fmt.Fprintf(&b, "\nEgress check: registry MiB out of a direct GET ÷ blob size = %.3f. Over these scenarios the registry logged %d bytes and wrote %d bytes to files (both subtracted); all %d processes logged %d bytes.\n",
			sr.EgressCheck, regLog, regFile, nAgents+2, sr.AllLogBytes)
		b.WriteString("Client CPU-s/GiB (Go HTTP + sha256):")
		for _, s := range sr.Scenarios {
			fmt.Fprintf(&b, " %s %.2f;", s.Name, s.CPUPerGiB["client"])
		}
		b.WriteString("\nTracker CPU-s, whole scenario:")
		for _, s := range sr.Scenarios {
			fmt.Fprintf(&b, " %s %.2f;", s.Name, s.CPUS["tracker"])
		}
		b.WriteString("\nNoise: machine CPU-s outside these processes (other load, kernel threads; ±0.1 from tick and snapshot skew) / steal, whole scenario:")
		for _, s := range sr.Scenarios {
			fmt.Fprintf(&b, " %s %.2f / %.2f;", s.Name, s.OtherCPUS, s.StealS)
		}
		b.WriteString("\n")
		if line := sourcesLine(sr); line != "" {
			b.WriteString(line)
		}
		if sw := sr.get("swarm8"); sw != nil {
			fmt.Fprintf(&b, "swarm8: agents' walls %s s; aggregate %.0f MiB/s delivered.\n", fmtWalls(sw.WallsS), float64(nAgents)*sr.SizeMiB/sw.WallS)
		}
		b.WriteString("\n")
	}
	if len(res.Notes) > 0 {
		b.WriteString("Notes:\n\n")
		for _, n := range res.Notes {
			fmt.Fprintf(&b, "- %s\n", n)
		}
		b.WriteString("\n")
	}
	return b.String()
}

func fmtWalls(ws []float64) string {
	s := append([]float64(nil), ws...)
	sort.Float64s(s)
	parts := make([]string, len(s))
	for i, w := range s {
		parts[i] = fmt.Sprintf("%.2f", w)
	}
	return strings.Join(parts, " ")
}

// sourcesLine says where the receiving agent's bytes came from (agent
// metrics; omitted when the binary has none of the series).
func sourcesLine(sr sizeResult) string {
	var parts []string
	for _, s := range sr.Scenarios {
		if s.Receiving == "" {
			continue
		}
		m := s.Metrics[s.Receiving]
		if len(m) == 0 {
			continue
		}
		keys := make([]string, 0, len(m))
		for k := range m {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		var kv []string
		for _, k := range keys {
			kv = append(kv, fmt.Sprintf("%s %.0f MiB", k, m[k]/mib))
		}
		p := fmt.Sprintf("%s (%s): %s", s.Name, s.Receiving, strings.Join(kv, ", "))
		if s.Sending != "" {
			if up, ok := s.Metrics[s.Sending]["uploaded_to_peers"]; ok {
				p += fmt.Sprintf("; %s uploaded %.0f MiB", s.Sending, up/mib)
			}
		}
		parts = append(parts, p)
	}
	if len(parts) == 0 {
		return ""
	}
	return "Receiving agent's metrics, delta per scenario: " + strings.Join(parts, "; ") + ".\n"
}

// printTops logs `go tool pprof -top` of the registry and of the receiving
// agent (swarm8: the agent that used the most CPU) for every scenario.
func (e *env) printTops(res result) {
	for _, sr := range res.Sizes {
		label := sizeLabel(int64(sr.SizeMiB * mib))
		for _, s := range sr.Scenarios {
			procs := []string{"registry"}
			recv := s.Receiving
			if s.Name == "swarm8" {
				best := 0.0
				for _, a := range e.agents {
					if v := s.CPUS[a.name]; v > best {
						best, recv = v, a.name
					}
				}
			}
			if recv != "" {
				procs = append(procs, recv)
			}
			for _, p := range procs {
				base := filepath.Join(e.profDir, fmt.Sprintf("%s-%s-%s", label, s.Name, p))
				if _, err := os.Stat(base + ".pprof"); err == nil {
					out, err := exec.Command("go", "tool", "pprof", "-top", "-nodecount=15", base+".pprof").CombinedOutput()
					if err != nil {
						e.t.Logf("pprof %s: %v", base+".pprof", err)
					}
					e.t.Logf("---- %s %s %s (%s.pprof) ----\n%s", label, s.Name, p, base, out)
				} else if _, err := os.Stat(base + ".perf.data"); err == nil && e.perf != "" {
					report := func(mode string, n int) string {
						out, err := exec.Command(e.perf, "report", "-i", base+".perf.data", "--stdio", mode,
							"--sort", "symbol", "-g", "none").Output()
						if err != nil {
							return fmt.Sprintf("perf report: %v", err)
						}
						return perfTop(out, n)
					}
					e.t.Logf("---- %s %s %s (%s.perf.data; perf, kernel included) ----\nself:\n%s\ncumulative (children, self):\n%s",
						label, s.Name, p, base, report("--no-children", 15), report("--children", 25))
				}
			}
		}
	}
}

// perfTop keeps the sample count and the first n symbol lines of perf
// report, blanks squeezed.
func perfTop(out []byte, n int) string {
	var keep []string
	for _, l := range strings.Split(string(out), "\n") {
		switch {
		case strings.HasPrefix(l, "# Samples"):
			keep = append(keep, l)
		case strings.TrimSpace(l) != "" && !strings.HasPrefix(l, "#") && n > 0:
			f := strings.Fields(l)
			for len(f) > 0 && f[len(f)-1] == "-" {
				f = f[:len(f)-1]
			}
			keep = append(keep, "  "+strings.Join(f, " "))
			n--
		}
	}
	return strings.Join(keep, "\n")
}
