package k8s

import (
	"archive/tar"
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// file is one entry of a layer built in memory.
type file struct {
	path string
	mode int64
	data []byte
	link string // symlink target
}

// layer makes an OCI layer of files, as ko does for a Go binary: no base
// image, no Docker, just a tar.
func layer(t *testing.T, files []file) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	dirs := map[string]bool{}
	for _, f := range files {
		// Parent directories first, once.
		parts := strings.Split(strings.TrimPrefix(filepath.Dir(f.path), "/"), "/")
		for i := range parts {
			d := strings.Join(parts[:i+1], "/")
			if d == "" || d == "." || dirs[d] {
				continue
			}
			dirs[d] = true
			if err := tw.WriteHeader(&tar.Header{Name: d + "/", Typeflag: tar.TypeDir, Mode: 0o755}); err != nil {
				t.Fatal(err)
			}
		}
		h := &tar.Header{Name: strings.TrimPrefix(f.path, "/"), Mode: f.mode}
		if f.link != "" {
			h.Typeflag, h.Linkname = tar.TypeSymlink, f.link
		} else {
			h.Typeflag, h.Size = tar.TypeReg, int64(len(f.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(b)), nil },
		tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func binFile(t *testing.T, src, dst string) file {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	return file{path: dst, mode: 0o755, data: b}
}

// image stacks layers on nothing, with an entrypoint.
func image(t *testing.T, entrypoint []string, user string, layers ...v1.Layer) v1.Image {
	t.Helper()
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err := mutate.AppendLayers(img, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", "amd64"
	cf.Config.Entrypoint = entrypoint
	cf.Config.User = user
	cf.Config.Env = []string{"PATH=/usr/local/bin:/bin"}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// busyboxLayer is a static busybox (Debian's busybox-static) with the few
// applets the test's pods use.
func busyboxLayer(t *testing.T) v1.Layer {
	t.Helper()
	files := []file{binFile(t, "/bin/busybox", "/bin/busybox")}
	for _, a := range []string{"sh", "cat", "sleep", "ls", "wget", "echo", "test"} {
		files = append(files, file{path: "/bin/" + a, mode: 0o777, link: "busybox"})
	}
	return layer(t, files)
}

// pauseImage compiles Kubernetes's own pause (build/pause/linux/pause.c of
// the pinned release, from the module cache) statically.
func pauseImage(t *testing.T, k8sModDir, dir string) v1.Image {
	t.Helper()
	out := filepath.Join(dir, "pause")
	src := filepath.Join(k8sModDir, "build", "pause", "linux", "pause.c")
	cmd := exec.Command("gcc", "-Os", "-static", "-DVERSION=v3.10-shoal-test", "-o", out, src)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building pause from %s: %v\n%s", src, err, b)
	}
	return image(t, []string{"/pause"}, "65535:65535", layer(t, []file{binFile(t, out, "/pause")}))
}

// shoalImage is bin/shoal-static at /usr/local/bin/shoal, as the Dockerfile
// lays it out (entrypoint shoal, user nonroot).
func shoalImage(t *testing.T, bin string) v1.Image {
	t.Helper()
	return image(t, []string{"/usr/local/bin/shoal"}, "65532:65532",
		layer(t, []file{binFile(t, bin, "/usr/local/bin/shoal")}))
}

// bigImage is busybox plus n random layers of size bytes each.
func bigImage(t *testing.T, n int, size int64) v1.Image {
	t.Helper()
	layers := []v1.Layer{busyboxLayer(t)}
	for range n {
		l, err := random.Layer(size, types.OCILayer)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	return image(t, []string{"/bin/sleep", "3600"}, "", layers...)
}

// push writes img to ref over a connection made inside ns.
func push(t *testing.T, ns netNS, ref string, img v1.Image) {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tr := &http.Transport{DialContext: ns.DialContext, MaxIdleConnsPerHost: 8}
	defer tr.CloseIdleConnections()
	if err := remote.Write(r, img, remote.WithTransport(tr)); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// nsClient is an HTTP client whose connections are made inside ns.
func nsClient(ns netNS) *http.Client {
	return &http.Client{Transport: &http.Transport{
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return ns.DialContext(ctx, network, addr)
		},
	}}
}
