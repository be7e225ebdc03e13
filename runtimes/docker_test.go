package runtimes

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/shoalproject/shoal/internal/testenv"
)

// dockerd is a Docker daemon of its own: socket, data root, exec root,
// pidfile and containerd all under one temp dir, vfs storage, no iptables,
// bridge or ip_forward sysctl — a system dockerd, if any, is not touched. (dockerd 20.10
// still makes an empty /run/docker/plugins, its plugin discovery path,
// which no flag moves.)
type dockerd struct {
	cli       string
	host      string // DOCKER_HOST
	cliConfig string // DOCKER_CONFIG, not ~/.docker
}

func startDockerd(t *testing.T, mirror string) *dockerd {
	t.Helper()
	needRoot(t, "dockerd")
	how := "`make test` installs Debian's docker.io (scripts/install-test-deps.sh)"
	bin := lookTool(t, "dockerd", how)
	// The client from the same package, if there: another docker on PATH
	// may be newer than this daemon.
	cli := filepath.Join(filepath.Dir(bin), "docker")
	if _, err := os.Stat(cli); err != nil {
		cli = lookTool(t, "docker", how)
	}
	ctd := lookTool(t, "containerd", "`make test` installs Debian's containerd")
	dir := testenv.SocketDir(t, "dkr")
	// dockerd would use a system containerd at /run/containerd if one ran,
	// or start one in its exec root; its own, explicitly, either way.
	ctdSock := filepath.Join(dir, "ctd.sock")
	ctdCfg := writeFile(t, dir, "containerd.toml", testenv.ContainerdConfig(filepath.Join(dir, "ctd"), ctdSock))
	cp := testenv.Start(t, "containerd (for dockerd)", ctd, []string{"--config", ctdCfg, "--log-level", "warn"})
	testenv.WaitFor(t, cp, "containerd's socket", 30*time.Second, func() error {
		_, err := os.Stat(ctdSock)
		return err
	})

	cfg, _ := json.Marshal(map[string]any{
		"registry-mirrors": []string{"http://" + mirror},
		// Else dockerd 20.10 writes its identity to /etc/docker/key.json.
		"deprecated-key-path": filepath.Join(dir, "key.json"),
	})
	cfgPath := writeFile(t, dir, "daemon.json", string(cfg))
	sock := filepath.Join(dir, "d.sock")
	p := testenv.Start(t, "dockerd", bin, []string{
		"--config-file", cfgPath,
		"--host", "unix://" + sock,
		"--data-root", filepath.Join(dir, "data"),
		"--exec-root", filepath.Join(dir, "exec"),
		"--pidfile", filepath.Join(dir, "d.pid"),
		"--containerd", ctdSock,
		"--storage-driver=vfs", "--iptables=false", "--ip6tables=false", "--ip-masq=false", "--ip-forward=false", "--bridge=none",
		"--log-level", "warn",
	}, noEgress(t)...)
	d := &dockerd{cli: cli, host: "unix://" + sock, cliConfig: filepath.Join(dir, "cli")}
	testenv.WaitFor(t, p, "dockerd to answer", 60*time.Second, func() error {
		_, err := d.try("version")
		return err
	})
	return d
}

func (d *dockerd) try(args ...string) (string, error) {
	return runErr([]string{"DOCKER_HOST=" + d.host, "DOCKER_CONFIG=" + d.cliConfig}, d.cli, args...)
}

func (d *dockerd) docker(t *testing.T, args ...string) string {
	t.Helper()
	out, err := d.try(args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

type dockerImage struct {
	ID          string
	RepoDigests []string
	RootFS      struct{ Layers []string }
}

func (d *dockerd) inspect(t *testing.T, ref string) dockerImage {
	t.Helper()
	var imgs []dockerImage
	if err := json.Unmarshal([]byte(d.docker(t, "image", "inspect", ref)), &imgs); err != nil || len(imgs) != 1 {
		t.Fatalf("docker image inspect %s: %v (%d images)", ref, err, len(imgs))
	}
	return imgs[0]
}

// checkDockerImage asserts that Docker holds img under repo with the pulled
// manifest (or index) digest, img's config as its ID, and img's layers.
func checkDockerImage(t *testing.T, got dockerImage, repo string, digest v1.Hash, img v1.Image) {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	if got.ID != cfg.String() {
		t.Errorf("%s: image ID %s, want the config digest %s", repo, got.ID, cfg)
	}
	if want := repo + "@" + digest.String(); !slices.Contains(got.RepoDigests, want) {
		t.Errorf("%s: RepoDigests %v lack %s", repo, got.RepoDigests, want)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	var diffIDs []string
	for _, h := range cf.RootFS.DiffIDs {
		diffIDs = append(diffIDs, h.String())
	}
	if !slices.Equal(got.RootFS.Layers, diffIDs) {
		t.Errorf("%s: layers %v, want %v", repo, got.RootFS.Layers, diffIDs)
	}
}

// Docker pulls with Docker-style addressing (127.0.0.1:<agent>/<repo>:<tag>)
// a multi-layer image and a multi-arch index, and through registry-mirrors a
// docker.io name, the agent's docker.io upstream being the local registry.
func testDocker(t *testing.T, c *cluster) {
	agent := c.agents[0]
	d := startDockerd(t, agent)

	multi := testenv.PushRandomImage(t, c.reg+"/lib/docker-multi:v1", 256<<10, 4)
	host := testenv.PlatformImage(t, runtime.GOARCH, 256<<10, 2)
	other := testenv.PlatformImage(t, otherArch(), 256<<10, 2)
	idx := testenv.PushIndex(t, c.reg+"/lib/docker-index:v1", map[string]v1.Image{runtime.GOARCH: host, otherArch(): other})

	before := scrape(t, agent)
	d.docker(t, "pull", agent+"/lib/docker-multi:v1")
	d.docker(t, "pull", agent+"/lib/docker-index:v1")
	want := blobsOf(t, multi, host)
	delta := settled(t, agent, before, want)
	logDelta(t, "docker pulls", delta)
	// multi's manifest, the index and the host's manifest.
	checkCold(t, delta, want, 3)
	md, _ := multi.Digest()
	checkDockerImage(t, d.inspect(t, agent+"/lib/docker-multi:v1"), agent+"/lib/docker-multi", md, multi)
	id, _ := idx.Digest()
	checkDockerImage(t, d.inspect(t, agent+"/lib/docker-index:v1"), agent+"/lib/docker-index", id, host)

	// registry-mirrors: Docker asks the mirror for docker.io names (no
	// ?ns=); the agent's default upstream, docker.io, is the local registry.
	// The daemon's proxy is a dead loopback port, so a pull that skipped
	// the mirror would fail rather than reach Docker Hub.
	name := fmt.Sprintf("shoal-mirrored-%d", time.Now().UnixNano())
	hub := testenv.PushRandomImage(t, c.reg+"/library/"+name+":v1", 256<<10, 3)
	before = scrape(t, agent)
	out := d.docker(t, "pull", name+":v1")
	want = blobsOf(t, hub)
	delta = settled(t, agent, before, want)
	logDelta(t, "docker pull via registry-mirrors", delta)
	checkCold(t, delta, want, 1)
	hd, _ := hub.Digest()
	if !strings.Contains(out, hd.String()) {
		t.Errorf("docker pull %s:v1 printed no digest %s:\n%s", name, hd, out)
	}
	checkDockerImage(t, d.inspect(t, name+":v1"), name, hd, hub)

	// A docker.io name the mirror lacks: dockerd falls back to Docker Hub
	// and meets the dead proxy — so the pull above did come from the mirror,
	// and nothing here leaves the machine.
	out, err := d.try("pull", name+"-absent:v1")
	if err == nil || !strings.Contains(out, "proxyconnect") {
		t.Errorf("pull of a docker.io name the mirror lacks: want a refused proxy connection, got err=%v\n%s", err, out)
	}
}
