package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoalproject/shoal/internal/containerdhosts"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// clusterSecret is the join secret of every Shoal process this test binary
// starts.
var clusterSecret = secret.Generate()

// preheatToken is the API token of the cluster's preheat service: it
// listens on the infra host's address, so it needs one.
var preheatToken = secret.Generate()

const (
	registryPort = 5000
	trackerPort  = 6969
	seederPort   = 6881
	mirrorAddr   = "127.0.0.1:65001"
	trackerSec   = "5d0e8a4c2b7f41e39a6c8d1f0b2e4a7c9d3f5b8e1a6c4d2f7e9b0a3c5d8f1e2b" // random; the tracker refuses guessable ones
)

// Cluster is one infra host (registry + tracker) and node hosts with agents.
type Cluster struct {
	t        *testing.T
	Net      *Net
	Infra    *Host
	Nodes    []*Host
	bin      string
	Reg      *testenv.Process
	Tracker  *testenv.Process
	trkCfg   string
	regCfg   string
	Redis    *testenv.Process
	Preheat  *testenv.Process
	redisBin string
	Agents   []*testenv.Process
	// Debug: every Shoal process serves pprof on its host's loopback
	// (debugPort; the registry on registryDebugPort).
	Debug bool
	// StallTimeout is the agents' p2p.stallTimeout (0: 5s).
	StallTimeout time.Duration
}

// Debug listeners, on each host's own loopback.
const (
	debugPort         = 6060
	registryDebugPort = 5001
)

func (c *Cluster) RegistryAddr() string { return fmt.Sprintf("%s:%d", c.Infra.IP, registryPort) }

func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// newCluster creates the namespaces and starts the registry and tracker in
// the infra host; node agents start with StartAgents. With redisTracker the
// tracker keeps peers in a real redis-server in the infra host.
func newCluster(t *testing.T, nodes int, link Link, redisTracker bool) *Cluster {
	t.Helper()
	return newClusterDebug(t, nodes, link, redisTracker, false)
}

// newClusterDebug is newCluster with, if debug, pprof listeners on every
// Shoal process (TestScale's profiles).
func newClusterDebug(t *testing.T, nodes int, link Link, redisTracker, debug bool) *Cluster {
	t.Helper()
	redisBlock, redisBin := "", ""
	if redisTracker {
		bin, err := exec.LookPath("redis-server")
		if err != nil {
			t.Skip("redis-server not installed; `make deps` installs it")
		}
		redisBlock, redisBin = "redis: {addrs: [\"127.0.0.1:6379\"]}", bin
	}
	n := newNet(t, nodes+1, link)
	c := &Cluster{t: t, Net: n, Infra: n.Hosts[0], Nodes: n.Hosts[1:], bin: testenv.ShoalBinary(t), redisBin: redisBin, Debug: debug}
	dir := t.TempDir()
	ip := c.Infra.IP
	debugBlock, regDebug := "", ""
	if debug {
		debugBlock = fmt.Sprintf("debug: {addr: \"127.0.0.1:%d\"}", debugPort)
		regDebug = fmt.Sprintf("127.0.0.1:%d", registryDebugPort)
	}
	if redisTracker {
		c.StartRedis()
	}
	c.trkCfg = writeFile(t, dir, "tracker.yml", fmt.Sprintf(`addr: %s:%d
secrets: [%s]
cluster: {secret: %s}
interval: 10s
peerTTL: 3m
%s
%s
log: {level: warn}
`, ip, trackerPort, trackerSec, clusterSecret, redisBlock, debugBlock))
	c.StartTracker()
	regCfg := writeFile(t, dir, "registry.yml", testenv.RegistryConfig{
		Addr:          fmt.Sprintf("%s:%d", ip, registryPort),
		Root:          filepath.Join(dir, "registry-data"),
		HTTPSecret:    "8e2c4a6f1b3d5e7092a4c6e8f0b1d3e5a7c9e2b4d6f8a0c1e3b5d7f9a2c4e6b8",
		BaseURL:       fmt.Sprintf("http://%s:%d", ip, registryPort),
		TrackerURL:    fmt.Sprintf("http://%s:%d/announce", ip, trackerPort),
		TrackerSecret: trackerSec,
		ClusterSecret: clusterSecret,
		SeederListen:  fmt.Sprintf("%s:%d", ip, seederPort),
		Debug:         regDebug,
	}.YAML())
	c.regCfg = regCfg
	c.StartRegistry()
	return c
}

// StartRegistry (re)starts the registry on its fixed address and storage.
func (c *Cluster) StartRegistry() {
	c.t.Helper()
	c.Reg = c.Infra.Start(c.t, "shoal registry", c.bin, "registry", "--config", c.regCfg)
	c.Infra.WaitHTTP(c.t, c.Reg, "http://"+c.RegistryAddr()+"/v2/", 60*time.Second)
}

// StartRedis (re)starts redis-server on the infra host's loopback, empty
// (persistence off, as a restarted cache would be).
func (c *Cluster) StartRedis() {
	c.t.Helper()
	c.Redis = c.Infra.Start(c.t, "redis-server", c.redisBin, "--port", "6379", "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--protected-mode", "no")
	c.Infra.WaitTCP(c.t, c.Redis, "127.0.0.1:6379", 10*time.Second)
}

// Containerd is a containerd daemon inside a node namespace, pulling
// through the node's agent (hosts.toml mirror).
type Containerd struct {
	Host     *Host
	sock     string
	hostsDir string
	proc     *testenv.Process
}

// StartContainerd starts containerd (own root, state and socket) in node i
// with a hosts.toml sending the registry's pulls to the node's agent.
func (c *Cluster) StartContainerd(i int) *Containerd {
	t := c.t
	t.Helper()
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd not installed; `make deps` installs it")
	}
	if _, err := exec.LookPath("ctr"); err != nil {
		t.Skip("ctr not installed (Debian package containerd)")
	}
	dir := testenv.SocketDir(t, "shoal-e2e-ctd")
	cd := &Containerd{Host: c.Nodes[i], sock: filepath.Join(dir, "c.sock"), hostsDir: filepath.Join(dir, "certs.d")}
	cfg := writeFile(t, dir, "config.toml", testenv.ContainerdConfig(dir, cd.sock))
	// What `shoal containerd-hosts` writes on a node.
	reg := containerdhosts.Registry{Host: c.RegistryAddr(), Server: "http://" + c.RegistryAddr()}
	if _, err := containerdhosts.Write(cd.hostsDir, []containerdhosts.Registry{reg}, "http://"+mirrorAddr); err != nil {
		t.Fatal(err)
	}
	cd.proc = cd.Host.Start(t, fmt.Sprintf("containerd node-%d", i), bin, "--config", cfg, "--log-level", "warn")
	testenv.WaitFor(t, cd.proc, "containerd to answer", 30*time.Second, func() error {
		_, err := cd.ctr(context.Background(), "version")
		return err
	})
	return cd
}

func (cd *Containerd) ctr(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"netns", "exec", cd.Host.Name, "ctr", "--address", cd.sock, "--namespace", "e2e"}, args...)
	out, err := exec.CommandContext(ctx, "ip", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("ctr %s: %v: %s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// Pull runs `ctr images pull` of ref (registry address: hosts.toml routes
// it through the agent) and checks that containerd has the image under the
// expected manifest digest and every blob in its content store (containerd
// verifies each blob's digest on ingest).
func (cd *Containerd) Pull(ctx context.Context, ref string, want v1.Image) error {
	if _, err := cd.ctr(ctx, "images", "pull", "--plain-http", "--hosts-dir", cd.hostsDir, "--snapshotter", "native", ref); err != nil {
		return err
	}
	d, err := want.Digest()
	if err != nil {
		return err
	}
	images, err := cd.ctr(ctx, "images", "ls")
	if err != nil {
		return err
	}
	found := false
	for _, l := range strings.Split(images, "\n") {
		if strings.HasPrefix(l, ref+" ") && strings.Contains(l, d.String()) {
			found = true
		}
	}
	if !found {
		return fmt.Errorf("containerd: %s with digest %s not in images ls:\n%s", ref, d, images)
	}
	content, err := cd.ctr(ctx, "content", "ls")
	if err != nil {
		return err
	}
	m, err := want.Manifest()
	if err != nil {
		return err
	}
	for _, b := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		if !strings.Contains(content, b.Digest.String()) {
			return fmt.Errorf("containerd: blob %s missing from the content store", b.Digest)
		}
	}
	return nil
}

const preheatPort = 8002

func (c *Cluster) PreheatURL() string { return fmt.Sprintf("http://%s:%d", c.Infra.IP, preheatPort) }

// StartPreheat starts `shoal preheat` on the infra host (state in the
// cluster's Redis). Agents started afterwards heartbeat to it.
func (c *Cluster) StartPreheat() {
	t := c.t
	t.Helper()
	if c.Redis == nil {
		t.Fatal("StartPreheat needs a cluster with Redis")
	}
	cfg := writeFile(t, t.TempDir(), "preheat.yml", fmt.Sprintf(`addr: "%[1]s:%[2]d"
cluster: {secret: %[4]q}
apiTokens: [%[5]q]
redis: {addrs: ["127.0.0.1:6379"], keyPrefix: "{shoal-preheat}:"}
registry: "http://%[3]s"
plainHTTPRegistries: [%[3]q]
heartbeatTTL: 30s
fetchTimeout: 5m
agentConcurrency: 4
policies: []
`, c.Infra.IP, preheatPort, c.RegistryAddr(), clusterSecret, preheatToken))
	c.Preheat = c.Infra.Start(t, "shoal preheat", c.bin, "preheat", "serve", "--config", cfg)
	c.Infra.WaitHTTP(t, c.Preheat, c.PreheatURL()+"/healthz", 30*time.Second)
}

// StartTracker (re)starts the tracker on its fixed address.
func (c *Cluster) StartTracker() {
	c.t.Helper()
	c.Tracker = c.Infra.Start(c.t, "shoal tracker", c.bin, "tracker", "--config", c.trkCfg)
	c.Infra.WaitHTTP(c.t, c.Tracker, fmt.Sprintf("http://%s:%d/healthz", c.Infra.IP, trackerPort), 30*time.Second)
}

// StartAgents starts an agent with an empty cache on each of the first n
// nodes.
func (c *Cluster) StartAgents(n int) {
	t := c.t
	t.Helper()
	c.Agents = make([]*testenv.Process, n)
	for i := range n {
		c.Agents[i] = c.startAgent(i)
	}
	for i, h := range c.Nodes[:n] {
		h.WaitHTTP(t, c.Agents[i], "http://"+mirrorAddr+"/healthz", 60*time.Second)
	}
}

// RestartAgent starts node i's agent again, with a new empty cache.
func (c *Cluster) RestartAgent(i int) {
	c.t.Helper()
	c.Agents[i].Stop()
	c.Agents[i] = c.startAgent(i)
	c.Nodes[i].WaitHTTP(c.t, c.Agents[i], "http://"+mirrorAddr+"/healthz", 60*time.Second)
}

func (c *Cluster) startAgent(i int) *testenv.Process {
	t := c.t
	t.Helper()
	h := c.Nodes[i]
	dir := t.TempDir()
	preheatURL := ""
	if c.Preheat != nil {
		preheatURL = c.PreheatURL()
	}
	stall := 5 * time.Second
	if c.StallTimeout > 0 {
		stall = c.StallTimeout
	}
	debugBlock := ""
	if c.Debug {
		debugBlock = fmt.Sprintf("debug: {addr: \"127.0.0.1:%d\"}", debugPort)
	}
	cfg := writeFile(t, dir, "agent.yml", fmt.Sprintf(`node: {id: node-%[1]d, groups: [e2e]}
cluster: {secret: %[7]q}
mirror: {addr: %[2]q}
control: {addr: "0.0.0.0:65002", advertise: "https://%[3]s:65002"}
upstreams:
  - {host: %[4]q, url: "http://%[4]s", default: true}
cache: {dir: %[5]q, maxBytes: 8589934592, authTTL: 30s}
p2p:
  enabled: true
  addr: "0.0.0.0:6881"
  advertiseIP: %[3]q
  stallTimeout: %[9]s
  deadline: 10m
  seedTime: 1h
preheat: {url: %[6]q, interval: 1s}
log: {level: warn}
%[8]s
`, i, mirrorAddr, h.IP, c.RegistryAddr(), filepath.Join(dir, "cache"), preheatURL, clusterSecret, debugBlock, stall))
	return h.Start(t, fmt.Sprintf("shoal agent node-%d", i), c.bin, "agent", "--config", cfg)
}

// StopAgents stops every agent (their caches go with their temp dirs).
func (c *Cluster) StopAgents() {
	for _, a := range c.Agents {
		a.Stop()
	}
	c.Agents = nil
}

// scrape reads Prometheus samples (name{labels} → value) from url, dialing
// from inside host h.
func scrape(t *testing.T, h *Host, url string) map[string]float64 {
	t.Helper()
	cl := &http.Client{Transport: h.Transport(), Timeout: 5 * time.Second}
	resp, err := cl.Get(url)
	if err != nil {
		t.Fatalf("metrics %s in %s: %v", url, h.Name, err)
	}
	defer resp.Body.Close()
	m := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			m[l[:i]] = v
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("metrics %s in %s: %v", url, h.Name, err)
	}
	return m
}
