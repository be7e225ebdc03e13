package runtimes

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// cluster is one registry, one tracker and two agents, shared by every
// runtime's subtest: starting them costs a few seconds, the runtimes'
// daemons are what each subtest starts. Subtests run one at a time, so the
// agents' metric deltas belong to the subtest that read them.
type cluster struct {
	reg    string   // registry address, host:port
	agents []string // mirror addresses, host:port
}

// otherArch is an architecture besides the host's, for multi-arch indexes.
func otherArch() string {
	if runtime.GOARCH == "arm64" {
		return "amd64"
	}
	return "arm64"
}

func TestRuntimes(t *testing.T) {
	c := startCluster(t)
	t.Run("docker", func(t *testing.T) { testDocker(t, c) })
	t.Run("podman", func(t *testing.T) { testPodman(t, c) })
	t.Run("skopeo", func(t *testing.T) { testSkopeo(t, c) })
	t.Run("containerd2-ctr", func(t *testing.T) { testContainerd2Ctr(t, c) })
	t.Run("containerd2-cri", func(t *testing.T) { testContainerd2CRI(t, c) })
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func startCluster(t *testing.T) *cluster {
	t.Helper()
	bin := testenv.ShoalBinary(t)
	dir := t.TempDir()
	c := &cluster{reg: testenv.FreeAddr(t)}
	trk := testenv.FreeAddr(t)
	// Random secrets: Shoal refuses short or guessable ones.
	trackerSecret := secret.Generate()
	clusterSecret := secret.Generate() // the join secret of the agents and the seeder
	trkCfg := writeFile(t, dir, "tracker.yml", fmt.Sprintf("addr: %s\nsecrets: [%s]\nallowUnsigned: true\ninterval: 10s\npeerTTL: 3m\nlog: {level: warn}\n", trk, trackerSecret))
	tp := testenv.Start(t, "shoal tracker", bin, []string{"tracker", "--config", trkCfg})
	testenv.WaitHTTP(t, tp, "http://"+trk+"/healthz", 30*time.Second)
	regCfg := writeFile(t, dir, "registry.yml", testenv.RegistryConfig{
		Addr:          c.reg,
		Root:          filepath.Join(dir, "registry-data"),
		HTTPSecret:    secret.Generate(),
		BaseURL:       "http://" + c.reg,
		TrackerURL:    "http://" + trk + "/announce",
		TrackerSecret: trackerSecret,
		ClusterSecret: clusterSecret,
		SeederListen:  testenv.FreeAddr(t),
	}.YAML())
	rp := testenv.Start(t, "shoal registry", bin, []string{"registry", "--config", regCfg})
	testenv.WaitHTTP(t, rp, "http://"+c.reg+"/v2/", 60*time.Second)
	for i := 0; i < 2; i++ {
		mirror := testenv.FreeAddr(t)
		// docker.io is the default upstream, pointed at the local registry:
		// Docker-style addressing (127.0.0.1:<port>/<repo>) and Docker's
		// registry-mirrors send no ?ns=, so both land on it; containerd
		// sends ?ns=<registry address>, the second entry.
		cfg := writeFile(t, dir, fmt.Sprintf("agent-%d.yml", i), fmt.Sprintf(`node: {id: runtimes-%[1]d}
cluster: {secret: %[6]q}
mirror: {addr: %[2]q}
control: {addr: %[3]q}
upstreams:
  - {host: docker.io, url: "http://%[4]s", default: true}
  - {host: %[4]q, url: "http://%[4]s"}
cache: {dir: %[5]q, maxBytes: 4294967296}
p2p: {enabled: true, addr: "127.0.0.1:0", stallTimeout: 5s}
log: {level: warn}
`, i, mirror, testenv.FreeAddr(t), c.reg, filepath.Join(dir, fmt.Sprintf("cache-%d", i)), clusterSecret))
		p := testenv.Start(t, fmt.Sprintf("shoal agent %d", i), bin, []string{"agent", "--config", cfg})
		testenv.WaitHTTP(t, p, "http://"+mirror+"/healthz", 30*time.Second)
		c.agents = append(c.agents, mirror)
	}
	return c
}

// metrics is one scrape of an agent's /metrics: sample (name{labels}) →
// value.
type metrics map[string]float64

func scrape(t *testing.T, addr string) metrics {
	t.Helper()
	return testenv.Scrape(t, addr)
}

// settled is the change in an agent's metrics since before, once they show
// every blob of want downloaded (or after 10 s): a runtime may see a blob's
// last byte a moment before the agent has counted it.
func settled(t *testing.T, addr string, before metrics, want blobSet) metrics {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		d := scrape(t, addr).sub(before)
		if (d[downloads] >= float64(len(want)) && d[bytesRegistry]+d[bytesPeers] >= want.bytes()) || time.Now().After(deadline) {
			return d
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// requests sums the mirror's requests of a kind, whatever their method and
// Range (containerd 2 asks for manifests with "Range: bytes=0-" too).
func (m metrics) requests(kind string) float64 {
	var n float64
	for k, v := range m {
		if strings.HasPrefix(k, "shoal_agent_mirror_requests_total{") && strings.Contains(k, `kind="`+kind+`"`) {
			n += v
		}
	}
	return n
}

func (m metrics) sub(before metrics) metrics {
	d := metrics{}
	for k, v := range m {
		d[k] = v - before[k]
	}
	return d
}

const (
	downloads     = "shoal_agent_blob_downloads_total"
	bytesRegistry = `shoal_agent_blob_bytes_total{source="registry"}`
	bytesPeers    = `shoal_agent_blob_bytes_total{source="peer"}`
	bytesCache    = `shoal_agent_blob_bytes_total{source="cache"}`
	rangedGets    = `shoal_agent_mirror_requests_total{kind="blob",method="GET",ranged="true"}`
	mismatches    = "shoal_agent_digest_mismatches_total"
)

// blobSet is the blobs a pull must move: digest → size.
type blobSet map[v1.Hash]int64

func blobsOf(t *testing.T, imgs ...v1.Image) blobSet {
	t.Helper()
	s := blobSet{}
	for _, img := range imgs {
		for d, n := range testenv.Blobs(t, img) {
			s[d] = n
		}
	}
	return s
}

func (s blobSet) bytes() float64 {
	var n int64
	for _, v := range s {
		n += v
	}
	return float64(n)
}

// checkCold asserts that a cold pull of want went through the agent: one
// download per blob, every blob byte fetched once (from the registry or
// other agents, none twice), no digest mismatch, and at least manifests
// manifest requests at the mirror.
func checkCold(t *testing.T, d metrics, want blobSet, manifests int) {
	t.Helper()
	if got := d[downloads]; got != float64(len(want)) {
		t.Errorf("agent blob downloads = %v, want %d (one per blob of the image)", got, len(want))
	}
	if got := d[bytesRegistry] + d[bytesPeers]; got != want.bytes() {
		t.Errorf("agent downloaded %v bytes (registry %v, peers %v), want %v: every blob byte once", got, d[bytesRegistry], d[bytesPeers], want.bytes())
	}
	if got := d.requests("manifest"); got < float64(manifests) {
		t.Errorf("manifest requests at the mirror = %v, want at least %d", got, manifests)
	}
	if d[mismatches] != 0 {
		t.Errorf("digest mismatches = %v", d[mismatches])
	}
}

func logDelta(t *testing.T, what string, d metrics) {
	t.Helper()
	var keys []string
	for k, v := range d {
		if v != 0 && strings.HasPrefix(k, "shoal_agent_") && !strings.Contains(k, "_bucket") {
			keys = append(keys, fmt.Sprintf("%s=%v", k, v))
		}
	}
	sort.Strings(keys)
	t.Logf("%s: agent metric deltas: %s", what, strings.Join(keys, " "))
}

func needRoot(t *testing.T, what string) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skipf("%s needs root (it mounts and owns its storage)", what)
	}
}

// lookTool finds a runtime's program, skipping with how to get it.
func lookTool(t *testing.T, name, how string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("%s not installed; %s", name, how)
	}
	return p
}

// run runs a program, failing the test with its output if it fails.
func run(t *testing.T, env []string, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}

// noEgress is the environment for a runtime's process: a proxy on a closed
// loopback port for everything but loopback, so that a runtime falling back
// from the mirror to a public registry fails here instead of leaving the
// machine.
func noEgress(t *testing.T) []string {
	t.Helper()
	dead := "http://" + testenv.FreeAddr(t)
	return []string{"HTTP_PROXY=" + dead, "HTTPS_PROXY=" + dead, "http_proxy=" + dead, "https_proxy=" + dead,
		"NO_PROXY=127.0.0.1,localhost", "no_proxy=127.0.0.1,localhost"}
}

func runErr(env []string, bin string, args ...string) (string, error) {
	cmd := exec.Command(bin, args...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out), nil
}
