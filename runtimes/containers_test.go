package runtimes

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/shoalproject/shoal/internal/testenv"
)

// registriesConf writes a containers-registries.conf(5) that sends pulls of
// the registry to the agent as a mirror, the way a user sets up Podman,
// Skopeo, Buildah or CRI-O. The agent gets no ?ns= from them: its default
// upstream is the registry.
func registriesConf(t *testing.T, dir, reg, mirror string) string {
	t.Helper()
	return writeFile(t, dir, "registries.conf", fmt.Sprintf(`unqualified-search-registries = []

[[registry]]
prefix = %[1]q
location = %[1]q
insecure = true

[[registry.mirror]]
location = %[2]q
insecure = true
`, reg, mirror))
}

// containersPolicy accepts any image: these tests check digests, not
// signatures, and must not depend on /etc/containers/policy.json.
func containersPolicy(t *testing.T, dir string) string {
	t.Helper()
	return writeFile(t, dir, "policy.json", `{"default": [{"type": "insecureAcceptAnything"}]}`)
}

// Podman pulls a multi-layer image and a multi-arch index through the agent
// as a registries.conf mirror, with storage of its own.
func testPodman(t *testing.T, c *cluster) {
	needRoot(t, "podman")
	bin := lookTool(t, "podman", "`make test` installs Debian's podman (scripts/install-test-deps.sh)")
	agent := c.agents[0]
	dir := testenv.SocketDir(t, "pdm")
	env := append(noEgress(t), "CONTAINERS_REGISTRIES_CONF="+registriesConf(t, dir, c.reg, agent),
		"CONTAINERS_STORAGE_CONF="+writeFile(t, dir, "storage.conf", fmt.Sprintf("[storage]\ndriver = \"vfs\"\ngraphroot = %q\nrunroot = %q\n",
			filepath.Join(dir, "root"), filepath.Join(dir, "run"))))
	policy := containersPolicy(t, dir)
	podman := func(args ...string) string {
		t.Helper()
		// --network-config-dir: podman takes a lock in /etc/cni/net.d
		// even to pull.
		full := append([]string{"--tmpdir", filepath.Join(dir, "tmp"), "--cgroup-manager", "cgroupfs", "--events-backend", "none",
			"--network-config-dir", filepath.Join(dir, "net")}, args...)
		return run(t, env, bin, full...)
	}

	multi := testenv.PushRandomImage(t, c.reg+"/lib/podman-multi:v1", 256<<10, 4)
	host := testenv.PlatformImage(t, runtime.GOARCH, 256<<10, 2)
	other := testenv.PlatformImage(t, otherArch(), 256<<10, 2)
	idx := testenv.PushIndex(t, c.reg+"/lib/podman-index:v1", map[string]v1.Image{runtime.GOARCH: host, otherArch(): other})

	before := scrape(t, agent)
	podman("pull", "--signature-policy", policy, c.reg+"/lib/podman-multi:v1")
	podman("pull", "--signature-policy", policy, c.reg+"/lib/podman-index:v1")
	want := blobsOf(t, multi, host)
	delta := settled(t, agent, before, want)
	logDelta(t, "podman pulls", delta)
	checkCold(t, delta, want, 3)

	var got []struct {
		ID          string `json:"Id"`
		Digest      string
		RepoDigests []string
		RootFS      struct{ Layers []string }
	}
	if err := json.Unmarshal([]byte(podman("image", "inspect", c.reg+"/lib/podman-multi:v1", c.reg+"/lib/podman-index:v1")), &got); err != nil || len(got) != 2 {
		t.Fatalf("podman image inspect: %v (%d images)", err, len(got))
	}
	md, _ := multi.Digest()
	id, _ := idx.Digest()
	for i, w := range []struct {
		repo   string
		digest v1.Hash
		img    v1.Image
	}{{c.reg + "/lib/podman-multi", md, multi}, {c.reg + "/lib/podman-index", id, host}} {
		cfg, _ := w.img.ConfigName()
		if got[i].ID != cfg.Hex {
			t.Errorf("%s: image ID %s, want the config digest %s", w.repo, got[i].ID, cfg)
		}
		if want := w.repo + "@" + w.digest.String(); !slices.Contains(got[i].RepoDigests, want) {
			t.Errorf("%s: RepoDigests %v lack %s", w.repo, got[i].RepoDigests, want)
		}
		cf, _ := w.img.ConfigFile()
		var diffIDs []string
		for _, h := range cf.RootFS.DiffIDs {
			diffIDs = append(diffIDs, h.String())
		}
		if !slices.Equal(got[i].RootFS.Layers, diffIDs) {
			t.Errorf("%s: layers %v, want %v", w.repo, got[i].RootFS.Layers, diffIDs)
		}
	}
}

// Podman and Skopeo as root keep their blob-info cache (which blob is
// known where) in /var/lib/containers/cache whatever their storage roots;
// no flag of skopeo moves it. That is the one file these tests leave.

// Skopeo copies every platform of a multi-arch index through the agent as a
// registries.conf mirror (--registries-conf) into a dir: layout, then a
// second time through the other agent, which gets the bytes from the first.
func testSkopeo(t *testing.T, c *cluster) {
	bin := lookTool(t, "skopeo", "`make test` installs Debian's skopeo (scripts/install-test-deps.sh)")
	dir := testenv.SocketDir(t, "skp")
	policy := containersPolicy(t, dir)
	amd := testenv.PlatformImage(t, "amd64", 512<<10, 3)
	arm := testenv.PlatformImage(t, "arm64", 512<<10, 2)
	idx := testenv.PushIndex(t, c.reg+"/lib/skopeo-index:v1", map[string]v1.Image{"amd64": amd, "arm64": arm})
	want := blobsOf(t, amd, arm)

	for i, agent := range c.agents {
		conf := registriesConf(t, t.TempDir(), c.reg, agent)
		out := filepath.Join(dir, fmt.Sprintf("out-%d", i))
		before := scrape(t, agent)
		run(t, noEgress(t), bin, "--registries-conf", conf, "--policy", policy, "copy", "--all", "--retry-times", "0",
			"docker://"+c.reg+"/lib/skopeo-index:v1", "dir:"+out)
		delta := settled(t, agent, before, want)
		logDelta(t, fmt.Sprintf("skopeo copy through agent %d", i), delta)
		// The index and both platforms' manifests.
		checkCold(t, delta, want, 3)
		if i > 0 && delta[bytesPeers] == 0 {
			t.Errorf("agent %d took nothing from agent 0, which holds the image (registry bytes %v)", i, delta[bytesRegistry])
		}
		checkDirLayout(t, out, idx, want, amd, arm)
	}
}

// checkDirLayout asserts that a skopeo dir: copy holds a list of idx's
// manifests as manifest.json, each of imgs' manifests and every blob of want under its
// digest, with that digest.
func checkDirLayout(t *testing.T, dir string, idx v1.ImageIndex, want blobSet, imgs ...v1.Image) {
	t.Helper()
	// Skopeo 1.9 re-encodes the list it writes (with --preserve-digests it
	// refuses: "must be converted"), so the list is compared by the
	// manifests it names; those, and every blob, are kept byte for byte.
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := v1.ParseIndexManifest(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("%s/manifest.json: %v", dir, err)
	}
	orig, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var gotDs, wantDs []string
	for _, m := range got.Manifests {
		gotDs = append(gotDs, m.Digest.String())
	}
	for _, m := range orig.Manifests {
		wantDs = append(wantDs, m.Digest.String())
	}
	if !slices.Equal(gotDs, wantDs) {
		t.Errorf("%s/manifest.json names %v, want the index's %v", dir, gotDs, wantDs)
	}
	for _, img := range imgs {
		d, _ := img.Digest()
		if got := fileDigest(t, filepath.Join(dir, d.Hex+".manifest.json")); got != d.Hex {
			t.Errorf("%s: manifest %s is sha256:%s", dir, d, got)
		}
	}
	for d, size := range want {
		p := filepath.Join(dir, d.Hex)
		st, err := os.Stat(p)
		if err != nil {
			t.Errorf("blob %s: %v", d, err)
			continue
		}
		if st.Size() != size {
			t.Errorf("blob %s: %d bytes, want %d", d, st.Size(), size)
		}
		if got := fileDigest(t, p); got != d.Hex {
			t.Errorf("blob %s: content is sha256:%s", d, got)
		}
	}
}

func fileDigest(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
