// Package lazy starts containers from SOCI-indexed images with the SOCI
// snapshotter pulling lazily through two Shoal agents. It is a module of
// its own so that the snapshotter's dependencies stay out of the shoal
// binary's go.mod.
package lazy

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/awslabs/soci-snapshotter/fs/source"
	"github.com/awslabs/soci-snapshotter/soci"
	socistore "github.com/awslabs/soci-snapshotter/soci/store"
	"github.com/containerd/containerd/api/types/runc/options"
	containerd "github.com/containerd/containerd/v2/client"
	"github.com/containerd/containerd/v2/core/images"
	"github.com/containerd/containerd/v2/core/remotes/docker"
	"github.com/containerd/containerd/v2/pkg/cio"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/containerd/v2/pkg/oci"
	"github.com/containerd/containerd/v2/pkg/snapshotters"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// dataSize is the big file of the image: random, so its gzip layer is as
// big, and the container reads only 64 KiB of it.
const dataSize = 16 << 20

// linkRate is each agent's download limit: on loopback the layer completes
// in ~100 ms, before the container's first read could tell a Range answered
// early from one answered by the whole blob; at 1 MiB/s the 16 MiB layer
// takes 16 s, as on a real link, and the read near its end (readAt) is
// neither in the cache nor in the verified prefix when it comes, even on a
// loaded machine where starting the container takes seconds.
const linkRate = 1 << 20

// readAt is where the container reads 64 KiB of the big file
// (testdata/reader).
const readAt = 14 << 20

// spanSize is the SOCI index's span: the unit the snapshotter fetches.
const spanSize = 256 << 10

type node struct {
	agent    string // mirror address
	ctd      *containerd.Client
	runcRoot string // runc's state, the test's own (its default is shared by every containerd on the host)
}

func TestSOCILazyPull(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the snapshotter mounts FUSE filesystems and containerd runs containers: root only")
	}
	if _, err := os.Stat("/dev/fuse"); err != nil {
		t.Skipf("no /dev/fuse: %v", err)
	}
	snapBin := testenv.ToolBinary(t, "SOCI_SNAPSHOTTER_BIN")
	ctdBin := testenv.ToolBinary(t, "CONTAINERD2_BIN")
	// containerd 2.4 finds its runc shim on PATH; Debian's 1.6 shim there
	// fails to start tasks for it.
	shim := testenv.ToolBinary(t, "CONTAINERD2_SHIM_BIN")
	if _, err := exec.LookPath("runc"); err != nil {
		t.Skip("runc not installed (Debian runc)")
	}
	reg, agents := startCluster(t)

	ref := reg + "/lib/lazy:v1"
	want := pushImage(t, ref)
	sociRef := convert(t, ctdBin, reg, ref)

	var nodes []node
	for i, a := range agents {
		nodes = append(nodes, startNode(t, i, ctdBin, snapBin, filepath.Dir(shim), reg, a))
	}

	// Node 0: a cold lazy pull; the container's read must be served by
	// Range requests answered before their blob was whole.
	before := scrape(t, agents[0])
	out := runContainer(t, nodes[0], reg, sociRef, "c0")
	if out != want {
		t.Fatalf("container on node 0 printed %q, want %q", out, want)
	}
	d0 := scrape(t, agents[0]).sub(before)
	logDelta(t, "node 0", d0)
	if d0[earlyRanges] < 1 {
		t.Errorf("node 0: %s = %v, want ≥ 1: the snapshotter's reads waited for whole blobs", earlyRanges, d0[earlyRanges])
	}
	t.Logf("node 0: %.0f bytes of pieces fetched for Range readers, %.0f early Range responses; the big file is %d bytes",
		d0[rangePieces], d0[earlyRanges], dataSize)
	if d0[rangedGets] < 1 {
		t.Errorf("node 0: no ranged blob GET at the mirror: the snapshotter did not pull through the agent")
	}

	// Node 1: the same image through the other agent, which takes its
	// bytes from node 0's agent.
	before = scrape(t, agents[1])
	out = runContainer(t, nodes[1], reg, sociRef, "c1")
	if out != want {
		t.Fatalf("container on node 1 printed %q, want %q", out, want)
	}
	d1 := scrape(t, agents[1]).sub(before)
	logDelta(t, "node 1", d1)
	if d1[rangedGets] < 1 {
		t.Errorf("node 1: no ranged blob GET at the mirror")
	}
	t.Logf("node 1: %.0f blob bytes from node 0, %.0f from the registry, %.0f early Range responses",
		d1[bytesPeers], d1[bytesRegistry], d1[earlyRanges])
	if d1[bytesPeers] <= 0 {
		t.Errorf("node 1: %s = %v, want > 0: the second node's lazy pull took nothing from the first", bytesPeers, d1[bytesPeers])
	}
	for i, d := range []metrics{d0, d1} {
		if d[mismatches] != 0 {
			t.Errorf("node %d: digest mismatches = %v", i, d[mismatches])
		}
	}
}

// pushImage pushes a two-layer image to the registry directly: the reader
// binary, and /data/random. It returns what the container must print.
func pushImage(t *testing.T, ref string) string {
	t.Helper()
	dir := t.TempDir()
	bin := filepath.Join(dir, "reader")
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./testdata/reader")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build reader: %v\n%s", err, out)
	}
	prog, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	data := make([]byte, dataSize)
	rand.Read(data)
	sum := sha256.Sum256(data[readAt : readAt+64<<10])

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	for _, files := range []map[string][]byte{{"reader": prog}, {"data/random": data}} {
		layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
			return io.NopCloser(bytes.NewReader(tarOf(t, files))), nil
		}, tarball.WithMediaType(types.OCILayer))
		if err != nil {
			t.Fatal(err)
		}
		if img, err = mutate.AppendLayers(img, layer); err != nil {
			t.Fatal(err)
		}
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", goarch()
	cf.Config.Entrypoint = []string{"/reader"}
	if img, err = mutate.ConfigFile(img, cf); err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
	return fmt.Sprintf("middle %x", sum)
}

func goarch() string {
	out, err := exec.Command("go", "env", "GOARCH").Output()
	if err != nil {
		return "amd64"
	}
	return strings.TrimSpace(string(out))
}

func tarOf(t *testing.T, files map[string][]byte) []byte {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for n, b := range files {
		if d := filepath.Dir(n); d != "." {
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				t.Fatal(err)
			}
		}
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o755, Size: int64(len(b)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// convert is what `soci convert` does, with the library: a containerd of
// its own fetches the image from the registry directly, the index builder
// adds a SOCI index (v2: an OCI index holding the image and its SOCI index
// manifest) and containerd pushes it as <ref>-soci.
func convert(t *testing.T, ctdBin, reg, ref string) string {
	t.Helper()
	dir := testenv.SocketDir(t, "soci-build")
	sock := filepath.Join(dir, "c.sock")
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, containerdConfig(dir, sock, ""))
	p := testenv.Start(t, "containerd (build)", ctdBin, []string{"--config", cfg, "--log-level", "warn"})
	c := dial(t, p, sock)
	// A lease keeps what the conversion writes from containerd's garbage
	// collector until the converted image is named.
	ctx, done, err := c.WithLease(namespaces.WithNamespace(context.Background(), "build"))
	if err != nil {
		t.Fatal(err)
	}
	defer done(context.Background())
	direct := docker.NewResolver(docker.ResolverOptions{Hosts: docker.ConfigureDefaultRegistries(docker.WithPlainHTTP(docker.MatchAllHosts))})
	img, err := c.Fetch(ctx, ref, containerd.WithResolver(direct))
	if err != nil {
		t.Fatalf("fetch %s: %v", ref, err)
	}
	blobs, err := socistore.NewContentStore(socistore.WithType(socistore.ContainerdContentStoreType),
		socistore.WithContainerdAddress(sock), socistore.WithClient(socistore.NewContainerdClient(sock)))
	if err != nil {
		t.Fatal(err)
	}
	db, err := soci.NewDB(filepath.Join(dir, "artifacts.db"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := soci.NewIndexBuilder(c.ContentStore(), blobs, soci.WithMinLayerSize(0), soci.WithSpanSize(spanSize), soci.WithArtifactsDb(db))
	if err != nil {
		t.Fatal(err)
	}
	desc, err := b.Convert(ctx, img)
	if err != nil {
		t.Fatalf("soci convert: %v", err)
	}
	sociRef := ref + "-soci"
	if _, err := c.ImageService().Create(ctx, images.Image{Name: sociRef, Target: *desc}); err != nil {
		t.Fatal(err)
	}
	if err := c.Push(ctx, sociRef, *desc, containerd.WithResolver(direct)); err != nil {
		t.Fatalf("push %s: %v", sociRef, err)
	}
	return sociRef
}

// startNode starts a node's containerd and SOCI snapshotter, the
// snapshotter's mirror being the node's agent (configs/soci-snapshotter.toml).
func startNode(t *testing.T, i int, ctdBin, snapBin, shimDir, reg, agent string) node {
	t.Helper()
	dir := testenv.SocketDir(t, fmt.Sprintf("soci-%d", i))
	sock := filepath.Join(dir, "c.sock")
	snapSock := filepath.Join(dir, "soci.sock")
	snapCfg := filepath.Join(dir, "soci.toml")
	writeFile(t, snapCfg, fmt.Sprintf(`# Lazy fetches go to the node's agent; the registry itself is never asked.
[resolver.host.%[1]q]
  mirrors = [{host = "http://%[2]s", insecure = true}]
[content_store]
  type = "containerd"
  containerd_address = %[3]q
[background_fetch]
  disable = true
`, reg, agent, sock))
	sp := testenv.Start(t, fmt.Sprintf("soci-snapshotter %d", i), snapBin,
		[]string{"--address", snapSock, "--config", snapCfg, "--root", filepath.Join(dir, "soci-root"), "--log-level", "info"})
	cfg := filepath.Join(dir, "config.toml")
	writeFile(t, cfg, containerdConfig(dir, sock, snapSock))
	cp := testenv.Start(t, fmt.Sprintf("containerd %d", i), ctdBin, []string{"--config", cfg, "--log-level", "warn"},
		"PATH="+shimDir+string(os.PathListSeparator)+os.Getenv("PATH"))
	testenv.WaitFor(t, sp, "snapshotter socket", 30*time.Second, func() error {
		_, err := os.Stat(snapSock)
		return err
	})
	t.Cleanup(func() {
		// The snapshotter's FUSE mounts outlive it when it is killed.
		out, _ := os.ReadFile("/proc/self/mounts")
		for _, l := range strings.Split(string(out), "\n") {
			if f := strings.Fields(l); len(f) > 1 && strings.HasPrefix(f[1], dir) {
				exec.Command("umount", "-l", f[1]).Run()
			}
		}
	})
	return node{agent: agent, ctd: dial(t, cp, sock), runcRoot: filepath.Join(dir, "runc")}
}

func containerdConfig(dir, sock, snapSock string) string {
	s := fmt.Sprintf(`version = 3
root = %[1]q
state = %[2]q
disabled_plugins = ["io.containerd.nri.v1.nri", "io.containerd.grpc.v1.cri", "io.containerd.cri.v1.images", "io.containerd.cri.v1.runtime"]
[grpc]
  address = %[3]q
[ttrpc]
  address = "%[3]s.ttrpc"
[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = %[4]q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, filepath.Join(dir, "opt"))
	if snapSock != "" {
		s += fmt.Sprintf(`[proxy_plugins]
  [proxy_plugins.soci]
    type = "snapshot"
    address = %q
`, snapSock)
	}
	return s
}

func dial(t *testing.T, p *testenv.Process, sock string) *containerd.Client {
	t.Helper()
	var c *containerd.Client
	testenv.WaitFor(t, p, "containerd", 60*time.Second, func() error {
		var err error
		c, err = containerd.New(sock, containerd.WithTimeout(2*time.Second))
		if err != nil {
			return err
		}
		_, err = c.Version(context.Background())
		return err
	})
	t.Cleanup(func() { c.Close() })
	return c
}

// runContainer pulls ref with the soci snapshotter through the node's agent
// (no layer is downloaded: the snapshotter mounts each lazily) and runs it,
// returning what it printed.
func runContainer(t *testing.T, n node, reg, ref, id string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(namespaces.WithNamespace(context.Background(), "shoal"), 3*time.Minute)
	defer cancel()
	mirror := docker.NewResolver(docker.ResolverOptions{Hosts: func(host string) ([]docker.RegistryHost, error) {
		// containerd adds ?ns=<host> for a host other than the image's.
		return []docker.RegistryHost{{Client: http.DefaultClient, Host: n.agent, Scheme: "http", Path: "/v2",
			Capabilities: docker.HostCapabilityPull | docker.HostCapabilityResolve}}, nil
	}})
	img, err := n.ctd.Pull(ctx, ref, containerd.WithResolver(mirror), containerd.WithPullUnpack,
		containerd.WithPullSnapshotter("soci"),
		containerd.WithImageHandlerWrapper(source.AppendDefaultLabelsHandlerWrapper("", snapshotters.AppendInfoHandlerWrapper(ref))))
	if err != nil {
		t.Fatalf("pull %s with the soci snapshotter: %v", ref, err)
	}
	c, err := n.ctd.NewContainer(ctx, id, containerd.WithImage(img), containerd.WithSnapshotter("soci"),
		containerd.WithRuntime("io.containerd.runc.v2", &options.Options{Root: n.runcRoot}),
		containerd.WithNewSnapshot(id+"-snap", img), containerd.WithNewSpec(oci.WithImageConfig(img)))
	if err != nil {
		t.Fatalf("container %s: %v", id, err)
	}
	// Cleanup gets a context of its own (namespaced: without one containerd
	// refuses the delete and the task's shim outlives the test).
	cleanupCtx := namespaces.WithNamespace(context.Background(), "shoal")
	defer func() {
		if err := c.Delete(cleanupCtx, containerd.WithSnapshotCleanup); err != nil {
			t.Errorf("delete container %s: %v", id, err)
		}
	}()
	var out testenv.SyncBuffer
	task, err := c.NewTask(ctx, cio.NewCreator(cio.WithStreams(nil, &out, &out)))
	if err != nil {
		t.Fatalf("task %s: %v", id, err)
	}
	defer func() {
		if _, err := task.Delete(cleanupCtx, containerd.WithProcessKill); err != nil {
			t.Errorf("delete task %s: %v", id, err)
		}
	}()
	exit, err := task.Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := task.Start(ctx); err != nil {
		t.Fatalf("start %s: %v", id, err)
	}
	st := <-exit
	if code, _, err := st.Result(); err != nil || code != 0 {
		t.Fatalf("container %s exited %d (%v): %s", id, code, err, out.String())
	}
	return strings.TrimSpace(out.String())
}

func writeFile(t *testing.T, p, s string) {
	t.Helper()
	if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

func startCluster(t *testing.T) (string, []string) {
	t.Helper()
	bin := testenv.ShoalBinary(t)
	dir := t.TempDir()
	reg := testenv.FreeAddr(t)
	trk := testenv.FreeAddr(t)
	trackerSecret, clusterSecret := secret.Generate(), secret.Generate()
	trkCfg := filepath.Join(dir, "tracker.yml")
	writeFile(t, trkCfg, fmt.Sprintf("addr: %s\nsecrets: [%s]\nallowUnsigned: true\ninterval: 10s\npeerTTL: 3m\nlog: {level: warn}\n", trk, trackerSecret))
	tp := testenv.Start(t, "shoal tracker", bin, []string{"tracker", "--config", trkCfg})
	testenv.WaitHTTP(t, tp, "http://"+trk+"/healthz", 30*time.Second)
	regCfg := filepath.Join(dir, "registry.yml")
	writeFile(t, regCfg, testenv.RegistryConfig{
		Addr: reg, Root: filepath.Join(dir, "registry-data"), HTTPSecret: secret.Generate(),
		BaseURL: "http://" + reg, TrackerURL: "http://" + trk + "/announce", TrackerSecret: trackerSecret,
		ClusterSecret: clusterSecret, SeederListen: testenv.FreeAddr(t),
	}.YAML())
	rp := testenv.Start(t, "shoal registry", bin, []string{"registry", "--config", regCfg})
	testenv.WaitHTTP(t, rp, "http://"+reg+"/v2/", 60*time.Second)
	var agents []string
	for i := 0; i < 2; i++ {
		mirror := testenv.FreeAddr(t)
		cfg := filepath.Join(dir, fmt.Sprintf("agent-%d.yml", i))
		writeFile(t, cfg, fmt.Sprintf(`node: {id: lazy-%[1]d}
cluster: {secret: %[6]q}
mirror: {addr: %[2]q}
control: {addr: %[3]q}
upstreams:
  - {host: %[4]q, url: "http://%[4]s", default: true}
cache: {dir: %[5]q, maxBytes: 1073741824}
p2p: {enabled: true, addr: "127.0.0.1:0", stallTimeout: 5s, downloadBytesPerSec: %[7]d}
log: {level: warn}
`, i, mirror, testenv.FreeAddr(t), reg, filepath.Join(dir, fmt.Sprintf("cache-%d", i)), clusterSecret, linkRate))
		p := testenv.Start(t, fmt.Sprintf("shoal agent %d", i), bin, []string{"agent", "--config", cfg})
		testenv.WaitHTTP(t, p, "http://"+mirror+"/healthz", 30*time.Second)
		agents = append(agents, mirror)
	}
	return reg, agents
}

type metrics map[string]float64

const (
	earlyRanges   = `shoal_agent_range_responses_total{kind="early"}`
	rangePieces   = `shoal_agent_registry_piece_bytes_total{reason="range"}`
	rangedGets    = `shoal_agent_mirror_requests_total{kind="blob",method="GET",ranged="true"}`
	bytesPeers    = `shoal_agent_blob_bytes_total{source="peer"}`
	bytesRegistry = `shoal_agent_blob_bytes_total{source="registry"}`
	mismatches    = "shoal_agent_digest_mismatches_total"
)

func scrape(t *testing.T, addr string) metrics {
	t.Helper()
	return testenv.Scrape(t, addr)
}

func (m metrics) sub(before metrics) metrics {
	d := metrics{}
	for k, v := range m {
		d[k] = v - before[k]
	}
	return d
}

func logDelta(t *testing.T, what string, d metrics) {
	t.Helper()
	var keys []string
	for k, v := range d {
		if v != 0 && strings.HasPrefix(k, "shoal_agent_") && !strings.Contains(k, "_bucket") && !strings.Contains(k, "_seconds") {
			keys = append(keys, fmt.Sprintf("%s=%v", k, v))
		}
	}
	t.Logf("%s: agent metric deltas: %s", what, strings.Join(keys, " "))
}
