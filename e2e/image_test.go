package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// genImage builds a deterministic image of layers uncompressed tar layers
// holding incompressible ChaCha8 bytes; the same seed gives the same digests.
func genImage(seed string, total int64, layers int) (v1.Image, error) {
	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	per := total / int64(layers)
	var ls []v1.Layer
	for i := 0; i < layers; i++ {
		var key [32]byte
		k := sha256.Sum256([]byte(fmt.Sprintf("%s/%d", seed, i)))
		copy(key[:], k[:])
		rng := rand.NewChaCha8(key)
		var buf bytes.Buffer
		buf.Grow(int(per) + 2048)
		tw := tar.NewWriter(&buf)
		hdr := &tar.Header{Name: fmt.Sprintf("layer%d.bin", i), Mode: 0o644, Size: per - 1536, ModTime: time.Unix(0, 0)}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, err
		}
		if _, err := io.CopyN(tw, rng, hdr.Size); err != nil {
			return nil, err
		}
		if err := tw.Close(); err != nil {
			return nil, err
		}
		ls = append(ls, static.NewLayer(buf.Bytes(), types.OCIUncompressedLayer))
	}
	return mutate.AppendLayers(img, ls...)
}

// imageSize is the bytes a pull moves: layers + config + manifest.
func imageSize(img v1.Image) (int64, error) {
	m, err := img.Manifest()
	if err != nil {
		return 0, err
	}
	raw, err := img.RawManifest()
	if err != nil {
		return 0, err
	}
	n := m.Config.Size + int64(len(raw))
	for _, l := range m.Layers {
		n += l.Size
	}
	return n, nil
}

func push(ctx context.Context, tr http.RoundTripper, ref string, img v1.Image) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(r, img, remote.WithTransport(tr), remote.WithContext(ctx), remote.WithJobs(4))
}

// pull fetches ref's manifest, config and every layer concurrently (as
// containerd does), checking each against the expected image's digests.
func pull(ctx context.Context, tr http.RoundTripper, ref string, want v1.Image) error {
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		return err
	}
	wantDigest, err := want.Digest()
	if err != nil {
		return err
	}
	desc, err := remote.Get(r, remote.WithTransport(tr), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("manifest %s: %w", ref, err)
	}
	if desc.Digest != wantDigest {
		return fmt.Errorf("manifest %s: digest %s, want %s", ref, desc.Digest, wantDigest)
	}
	m, err := want.Manifest()
	if err != nil {
		return err
	}
	blobs := append([]v1.Descriptor{m.Config}, m.Layers...)
	repo := r.Context()
	errs := make([]error, len(blobs))
	var wg sync.WaitGroup
	for i, d := range blobs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fetchBlob(ctx, tr, repo, d)
		}()
	}
	wg.Wait()
	for _, e := range errs {
		if e != nil {
			return e
		}
	}
	return nil
}

// fetchBlob GETs one blob through the registry API and verifies size and
// sha256 of what arrived (not trusting any client library's checks).
func fetchBlob(ctx context.Context, tr http.RoundTripper, repo name.Repository, d v1.Descriptor) error {
	l, err := remote.Layer(repo.Digest(d.Digest.String()), remote.WithTransport(tr), remote.WithContext(ctx))
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	rc, err := l.Compressed()
	if err != nil {
		return fmt.Errorf("blob %s: %w", d.Digest, err)
	}
	defer rc.Close()
	h := sha256.New()
	n, err := io.Copy(h, rc)
	if err != nil {
		return fmt.Errorf("blob %s: after %d bytes: %w", d.Digest, n, err)
	}
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); got != d.Digest.String() || n != d.Size {
		return fmt.Errorf("blob %s: DIGEST MISMATCH: got %s (%d bytes), want %s (%d bytes)", d.Digest, got, n, d.Digest, d.Size)
	}
	return nil
}
