package runtimes

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoalproject/shoal/internal/containerdhosts"
	"github.com/shoalproject/shoal/internal/testenv"
)

// fetchChunk is containerd's concurrent_layer_fetch_buffer here: layers
// bigger than it come in parallel Range requests of this size.
const fetchChunk = 1 << 20

// containerd2 is a containerd 2 daemon (built by `make tools` into bin/) on
// its own root, state and socket, with the CRI plugin, pulling through the
// agent with hosts.toml for the registry. Its transfer service — the path
// of `ctr images pull` and of CRI pulls in containerd 2 — fetches layers in
// parallel Range requests.
type containerd2 struct {
	sock  string
	certs string
	ctr   string
	proc  *testenv.Process
}

func startContainerd2(t *testing.T, c *cluster, mirror string) *containerd2 {
	t.Helper()
	needRoot(t, "containerd")
	bin := testenv.ToolBinary(t, "CONTAINERD2_BIN")
	ctr := testenv.ToolBinary(t, "CTR2_BIN")
	dir := testenv.SocketDir(t, "ctd2")
	cd := &containerd2{sock: filepath.Join(dir, "c.sock"), certs: filepath.Join(dir, "certs.d"), ctr: ctr}
	// certs.d/<registry>/hosts.toml, what `shoal containerd-hosts` writes.
	reg := containerdhosts.Registry{Host: c.reg, Server: "http://" + c.reg}
	if _, err := containerdhosts.Write(cd.certs, []containerdhosts.Registry{reg}, "http://"+mirror); err != nil {
		t.Fatal(err)
	}
	// NRI would listen on /var/run/nri and the opt plugin write /opt:
	// neither is needed for pulls, and both would touch the host. Version 3
	// (containerd 2.4 migrates it, with a warning): with a version 4 file
	// 2.4.2 did not listen on this [grpc] address and made /run/containerd,
	// a system containerd's place.
	cfg := writeFile(t, dir, "config.toml", fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.nri.v1.nri"]
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
  [plugins."io.containerd.cri.v1.images"]
    snapshotter = "native"
    [plugins."io.containerd.cri.v1.images".registry]
      config_path = %[5]q
  [plugins."io.containerd.transfer.v1.local"]
    max_concurrent_downloads = 3
    concurrent_layer_fetch_buffer = %[6]d
    config_path = %[5]q
    [[plugins."io.containerd.transfer.v1.local".unpack_config]]
      platform = "linux/%[7]s"
      snapshotter = "native"
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), cd.sock, filepath.Join(dir, "opt"), cd.certs, fetchChunk, runtime.GOARCH))
	cd.proc = testenv.Start(t, "containerd 2", bin, []string{"--config", cfg, "--log-level", "warn"}, noEgress(t)...)
	testenv.WaitFor(t, cd.proc, "containerd 2 to answer", 60*time.Second, func() error {
		_, err := runErr(nil, ctr, "--address", cd.sock, "version")
		return err
	})
	return cd
}

func (cd *containerd2) run(t *testing.T, args ...string) string {
	t.Helper()
	return run(t, nil, cd.ctr, append([]string{"--address", cd.sock, "--namespace", "shoal"}, args...)...)
}

// containerd 2's ctr pulls, through its transfer service and hosts.toml
// (?ns=<registry> to the agent), a multi-layer image and every platform of
// a multi-arch index.
func testContainerd2Ctr(t *testing.T, c *cluster) {
	agent := c.agents[0]
	cd := startContainerd2(t, c, agent)
	multi := testenv.PushRandomImage(t, c.reg+"/lib/ctr2-multi:v1", 256<<10, 4)
	amd := testenv.PlatformImage(t, "amd64", 256<<10, 2)
	arm := testenv.PlatformImage(t, "arm64", 256<<10, 2)
	idx := testenv.PushIndex(t, c.reg+"/lib/ctr2-index:v1", map[string]v1.Image{"amd64": amd, "arm64": arm})

	before := scrape(t, agent)
	cd.run(t, "images", "pull", "--plain-http", "--hosts-dir", cd.certs, "--snapshotter", "native", c.reg+"/lib/ctr2-multi:v1")
	cd.run(t, "images", "pull", "--plain-http", "--hosts-dir", cd.certs, "--snapshotter", "native", "--all-platforms", c.reg+"/lib/ctr2-index:v1")
	want := blobsOf(t, multi, amd, arm)
	delta := settled(t, agent, before, want)
	logDelta(t, "ctr pulls", delta)
	checkCold(t, delta, want, 4)

	images := cd.run(t, "images", "ls")
	md, _ := multi.Digest()
	id, _ := idx.Digest()
	for ref, want := range map[string]v1.Hash{c.reg + "/lib/ctr2-multi:v1": md, c.reg + "/lib/ctr2-index:v1": id} {
		found := false
		for _, line := range strings.Split(images, "\n") {
			if strings.HasPrefix(line, ref+" ") && strings.Contains(line, want.String()) {
				found = true
			}
		}
		if !found {
			t.Errorf("image %s with digest %s not in ctr images ls:\n%s", ref, want, images)
		}
	}
	// containerd checks every blob's digest as it ingests it.
	content := cd.run(t, "content", "ls")
	for d := range want {
		if !strings.Contains(content, d.String()) {
			t.Errorf("blob %s missing from containerd's content store", d)
		}
	}
}

// The kubelet's path: crictl asks containerd 2's CRI image service, which
// pulls through the transfer service, hosts.toml and the agent, in parallel
// Range requests of 1 MiB; the agent fetches every byte from the registry
// once.
func testContainerd2CRI(t *testing.T, c *cluster) {
	crictl := testenv.ToolBinary(t, "CRICTL_BIN")
	agent := c.agents[0]
	cd := startContainerd2(t, c, agent)
	host := testenv.PlatformImage(t, runtime.GOARCH, 6<<20, 3)
	other := testenv.PlatformImage(t, otherArch(), 256<<10, 1)
	idx := testenv.PushIndex(t, c.reg+"/lib/cri:v1", map[string]v1.Image{runtime.GOARCH: host, otherArch(): other})
	ref := c.reg + "/lib/cri:v1"

	dir := t.TempDir()
	// crictl reads /etc/crictl.yaml unless told otherwise.
	conf := writeFile(t, dir, "crictl.yaml", fmt.Sprintf("runtime-endpoint: unix://%[1]s\nimage-endpoint: unix://%[1]s\ntimeout: 120\n", cd.sock))
	before := scrape(t, agent)
	run(t, nil, crictl, "--config", conf, "pull", ref)
	want := blobsOf(t, host)
	delta := settled(t, agent, before, want)
	logDelta(t, "crictl pull", delta)
	checkCold(t, delta, want, 2)
	// Every layer is bigger than a chunk: each comes in several ranges.
	var chunks float64
	for d, n := range want {
		if cfg, _ := host.ConfigName(); d != cfg {
			chunks += float64((n + fetchChunk - 1) / fetchChunk)
		}
	}
	if got := delta[rangedGets]; got < chunks {
		t.Errorf("ranged blob GETs at the mirror = %v, want at least %v (parallel %d-byte ranges of every layer)", got, chunks, fetchChunk)
	}
	if out := cd.proc.Output(); strings.Contains(out, "Falling back to local image pull") {
		t.Errorf("CRI did not pull through the transfer service:\n%s", out)
	}

	var img struct {
		Status struct {
			ID          string   `json:"id"`
			RepoDigests []string `json:"repoDigests"`
			RepoTags    []string `json:"repoTags"`
		} `json:"status"`
	}
	out := run(t, nil, crictl, "--config", conf, "inspecti", "-o", "json", ref)
	if err := json.Unmarshal([]byte(out), &img); err != nil {
		t.Fatalf("crictl inspecti: %v\n%s", err, out)
	}
	cfg, _ := host.ConfigName()
	if img.Status.ID != cfg.String() {
		t.Errorf("CRI image id %s, want the config digest %s", img.Status.ID, cfg)
	}
	id, _ := idx.Digest()
	if want := c.reg + "/lib/cri@" + id.String(); !slices.Contains(img.Status.RepoDigests, want) {
		t.Errorf("CRI repoDigests %v lack %s", img.Status.RepoDigests, want)
	}
}
