package testenv

import (
	"sort"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// PushRandomImage pushes a random image of `layers` layers of layerSize
// bytes to ref (host/repo[:tag], plain HTTP) and returns it.
func PushRandomImage(t testing.TB, ref string, layerSize, layers int64, opts ...remote.Option) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, layers)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(r, img, opts...); err != nil {
		t.Fatalf("push %s: %v", r, err)
	}
	return img
}

// LayerDigests lists the digests of img's layers, in order.
func LayerDigests(t testing.TB, img v1.Image) []v1.Hash {
	t.Helper()
	ls, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	out := make([]v1.Hash, 0, len(ls))
	for _, l := range ls {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, d)
	}
	return out
}

// PlatformImage is a random image of `layers` layers of layerSize bytes whose
// config says linux/arch, for multi-arch indexes.
func PlatformImage(t testing.TB, arch string, layerSize, layers int64) v1.Image {
	t.Helper()
	img, err := random.Image(layerSize, layers)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture = "linux", arch
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// PushIndex pushes a multi-arch index of the given images (keyed by
// architecture, all linux) to ref (plain HTTP) and returns it.
func PushIndex(t testing.TB, ref string, imgs map[string]v1.Image, opts ...remote.Option) v1.ImageIndex {
	t.Helper()
	arches := make([]string, 0, len(imgs))
	for arch := range imgs {
		arches = append(arches, arch)
	}
	sort.Strings(arches)
	var adds []mutate.IndexAddendum
	for _, arch := range arches {
		adds = append(adds, mutate.IndexAddendum{Add: imgs[arch], Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx := mutate.AppendManifests(empty.Index, adds...)
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(r, idx, opts...); err != nil {
		t.Fatalf("push index %s: %v", r, err)
	}
	return idx
}

// Blobs lists img's config and layer digests with their sizes: what a
// runtime pulling img fetches besides manifests.
func Blobs(t testing.TB, img v1.Image) map[v1.Hash]int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	out := map[v1.Hash]int64{m.Config.Digest: m.Config.Size}
	for _, l := range m.Layers {
		out[l.Digest] = l.Size
	}
	return out
}
