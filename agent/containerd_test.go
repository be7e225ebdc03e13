package agent

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/shoalproject/shoal/internal/testenv"
)

// startContainerd runs containerd on its own root/state/socket and returns
// the socket path.
func startContainerd(t *testing.T) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("containerd test needs root (containerd manages mounts and its state dir)")
	}
	bin, err := exec.LookPath("containerd")
	if err != nil {
		t.Skip("containerd not installed; `make test` installs it (scripts/install-test-deps.sh)")
	}
	if _, err := exec.LookPath("ctr"); err != nil {
		t.Skip("ctr not installed (Debian package containerd)")
	}
	// Unix socket paths are limited to 108 bytes: t.TempDir is too long.
	dir := testenv.SocketDir(t, "ctd")
	sock := filepath.Join(dir, "c.sock")
	cfgPath := filepath.Join(dir, "config.toml")
	if err := os.WriteFile(cfgPath, []byte(testenv.ContainerdConfig(dir, sock)), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "containerd", bin, []string{"--config", cfgPath, "--log-level", "warn"})
	testenv.WaitFor(t, p, "containerd", 30*time.Second, func() error {
		if out, err := exec.Command("ctr", "--address", sock, "version").CombinedOutput(); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	return sock
}

func imageBlobs(t *testing.T, img v1.Image) []string {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	out := []string{cfg.String()}
	for _, d := range layerDigests(t, img) {
		out = append(out, d.String())
	}
	return out
}

// containerd pulls a multi-layer image and a multi-arch index through the
// agent as its mirror (hosts.toml, ?ns=), and gets the exact content.
func TestContainerdPull(t *testing.T) {
	sock := startContainerd(t)
	reg := startUpstreamRegistry(t, "")
	cfg := testConfig(t, reg)
	// The default upstream is a dead end: only containerd's ?ns=<host>
	// routing reaches the registry.
	cfg.Upstreams = []Upstream{{Host: "elsewhere.example", URL: "http://127.0.0.1:1", Default: true}, {Host: reg, URL: "http://" + reg}}
	ag := startAgent(t, cfg)

	// Multi-layer image.
	img := testenv.PlatformImage(t, "amd64", 512<<10, 4)
	ref, _ := name.NewTag(reg+"/lib/multi:v1", name.Insecure)
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	// Multi-arch index.
	amd, arm := testenv.PlatformImage(t, "amd64", 512<<10, 2), testenv.PlatformImage(t, "arm64", 512<<10, 2)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	idxRef, _ := name.NewTag(reg+"/lib/index:v1", name.Insecure)
	if err := remote.WriteIndex(idxRef, idx); err != nil {
		t.Fatal(err)
	}

	// certs.d/<registry host>/hosts.toml, as shipped in configs/containerd.
	certs := t.TempDir()
	hostDir := filepath.Join(certs, reg)
	if err := os.MkdirAll(hostDir, 0o755); err != nil {
		t.Fatal(err)
	}
	hosts := fmt.Sprintf("server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", "http://"+reg, "http://"+ag.mirror)
	if err := os.WriteFile(filepath.Join(hostDir, "hosts.toml"), []byte(hosts), 0o644); err != nil {
		t.Fatal(err)
	}
	ctr := func(args ...string) string {
		t.Helper()
		full := append([]string{"--address", sock, "--namespace", "shoaltest"}, args...)
		out, err := exec.Command("ctr", full...).CombinedOutput()
		if err != nil {
			t.Fatalf("ctr %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ctr("images", "pull", "--plain-http", "--hosts-dir", certs, "--snapshotter", "native", reg+"/lib/multi:v1")
	ctr("images", "pull", "--plain-http", "--hosts-dir", certs, "--snapshotter", "native", "--all-platforms", reg+"/lib/index:v1")

	images := ctr("images", "ls")
	for ref, d := range map[string]func() (v1.Hash, error){reg + "/lib/multi:v1": img.Digest, reg + "/lib/index:v1": idx.Digest} {
		want, _ := d()
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
	content := ctr("content", "ls")
	var blobs []string
	for _, i := range []v1.Image{img, amd, arm} {
		blobs = append(blobs, imageBlobs(t, i)...)
	}
	for _, b := range blobs {
		if !strings.Contains(content, b) {
			t.Errorf("blob %s missing from containerd content store", b)
		}
	}
	// Every blob went through the agent (and is in its cache once its
	// commit, which follows the last byte to containerd, has landed).
	for _, b := range blobs {
		waitCached(t, ag.Agent, strings.TrimPrefix(b, "sha256:"))
	}
	if v := metric(t, ag.mirror, "shoal_agent_blob_downloads_total"); v != float64(len(blobs)) {
		t.Errorf("agent downloads = %v, want %d", v, len(blobs))
	}
}
