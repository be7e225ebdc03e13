package registry

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// The referrers index and the digest aliases live inside distribution's
// layout, where distribution, `registry garbage-collect` and registry:3
// tolerate them:
//
//   - referrers: repositories/<name>/_shoal/referrers/<subject alg>/<subject
//     hex>/<alg>/<hex>, one small JSON descriptor per referrer, so two
//     concurrent pushes of signatures for one image never read-modify-write
//     the same file. The catalog walk skips every "_" directory of a
//     repository and GC never looks there. An entry whose manifest has gone
//     (deleted or collected by an upstream registry) is dropped when read.
//   - sha512 blobs and manifests are stored under their own digest,
//     blobs/sha512/<hh>/<hex>/data, linked to themselves in _layers and
//     _manifests/revisions: the layout distribution's code reads and its
//     garbage collector handles (it marks the digests manifests name and
//     sweeps by blob path). distribution's upload stores them under sha256
//     with a sha512 link to that; Shoal copies the bytes over (verified)
//     after the commit, relinks, and leaves the sha256 copy to GC.
const (
	v2Root          = "/docker/registry/v2"
	repositoriesDir = v2Root + "/repositories/"
)

func referrersDir(repo string, subject digest.Digest) string {
	return path.Join(repositoriesDir, repo, "_shoal/referrers", subject.Algorithm().String(), subject.Encoded())
}

func referrerPath(repo string, subject, referrer digest.Digest) string {
	return path.Join(referrersDir(repo, subject), referrer.Algorithm().String(), referrer.Encoded())
}

func manifestRevisionLink(repo string, d digest.Digest) string {
	return path.Join(repositoriesDir, repo, "_manifests/revisions", d.Algorithm().String(), d.Encoded(), "link")
}

func layerLink(repo string, d digest.Digest) string {
	return path.Join(repositoriesDir, repo, "_layers", d.Algorithm().String(), d.Encoded(), "link")
}

func blobDataPath(d digest.Digest) string {
	enc := d.Encoded()
	return path.Join(v2Root, "blobs", d.Algorithm().String(), enc[:2], enc, "data")
}

// maxIndexEntry bounds what one index entry may hold: a descriptor with the
// referrer's annotations. Manifests are at most 4 MiB, so are their
// annotations; larger entries are refused when read.
const maxIndexEntry = 4 << 20

// manifestFields is what the referrers API needs from a pushed manifest.
type manifestFields struct {
	MediaType    string            `json:"mediaType"`
	ArtifactType string            `json:"artifactType"`
	Config       *v1.Descriptor    `json:"config"`
	Subject      *v1.Descriptor    `json:"subject"`
	Annotations  map[string]string `json:"annotations"`
}

// referrerOf returns the subject of a manifest and the descriptor its
// referrers list shows for it, or ok=false when it has no usable subject.
func referrerOf(mediaType string, payload []byte, dgst digest.Digest) (subject digest.Digest, desc v1.Descriptor, ok bool) {
	var m manifestFields
	if json.Unmarshal(payload, &m) != nil || m.Subject == nil || m.Subject.Digest.Validate() != nil {
		return "", desc, false
	}
	if mediaType == "" {
		mediaType = m.MediaType
	}
	desc = v1.Descriptor{
		MediaType:    mediaType,
		Digest:       dgst,
		Size:         int64(len(payload)),
		ArtifactType: m.ArtifactType,
		Annotations:  m.Annotations,
	}
	// The spec: an image manifest without artifactType is listed with its
	// config's media type.
	if desc.ArtifactType == "" && m.Config != nil && mediaType == v1.MediaTypeImageManifest {
		desc.ArtifactType = m.Config.MediaType
	}
	return m.Subject.Digest, desc, true
}

// referrerIndex reads and writes the per-repository referrers index.
type referrerIndex struct {
	d storagedriver.StorageDriver
}

func (x referrerIndex) add(ctx context.Context, repo string, subject digest.Digest, desc v1.Descriptor) error {
	b, err := json.Marshal(desc)
	if err != nil {
		return err
	}
	if err := x.d.PutContent(ctx, referrerPath(repo, subject, desc.Digest), b); err != nil {
		return fmt.Errorf("record referrer %s of %s in %s: %w", desc.Digest, subject, repo, err)
	}
	return nil
}

func (x referrerIndex) remove(ctx context.Context, repo string, subject, referrer digest.Digest) error {
	err := x.d.Delete(ctx, referrerPath(repo, subject, referrer))
	if err != nil && !isPathNotFound(err) {
		return fmt.Errorf("remove referrer %s of %s in %s: %w", referrer, subject, repo, err)
	}
	return nil
}

// list returns the referrers of subject whose manifests are still in repo,
// optionally only those of one artifactType, in a stable order.
func (x referrerIndex) list(ctx context.Context, repo string, subject digest.Digest, artifactType string) ([]v1.Descriptor, error) {
	algs, err := x.d.List(ctx, referrersDir(repo, subject))
	if isPathNotFound(err) {
		return []v1.Descriptor{}, nil
	}
	if err != nil {
		return nil, err
	}
	out := []v1.Descriptor{}
	for _, algDir := range algs {
		files, err := x.d.List(ctx, algDir)
		if isPathNotFound(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, f := range files {
			desc, ok, err := x.entry(ctx, repo, f)
			if err != nil {
				return nil, err
			}
			if ok && (artifactType == "" || desc.ArtifactType == artifactType) {
				out = append(out, desc)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Digest < out[j].Digest })
	return out, nil
}

// entry reads one index file; ok is false for entries that are unreadable
// as a descriptor or whose manifest is no longer in the repository.
func (x referrerIndex) entry(ctx context.Context, repo, p string) (v1.Descriptor, bool, error) {
	var desc v1.Descriptor
	if fi, err := x.d.Stat(ctx, p); err != nil || fi.IsDir() || fi.Size() > maxIndexEntry {
		if err != nil && !isPathNotFound(err) {
			return desc, false, err
		}
		return desc, false, nil
	}
	b, err := x.d.GetContent(ctx, p)
	if isPathNotFound(err) {
		return desc, false, nil
	}
	if err != nil {
		return desc, false, err
	}
	if json.Unmarshal(b, &desc) != nil || desc.Digest.Validate() != nil ||
		path.Base(p) != desc.Digest.Encoded() || !strings.HasSuffix(path.Dir(p), "/"+desc.Digest.Algorithm().String()) {
		return desc, false, nil
	}
	if _, err := x.d.Stat(ctx, manifestRevisionLink(repo, desc.Digest)); err != nil {
		if isPathNotFound(err) {
			return desc, false, nil
		}
		return desc, false, err
	}
	return desc, true, nil
}

// readLink reads a distribution link file: one digest.
func readLink(ctx context.Context, d storagedriver.StorageDriver, p string) (digest.Digest, error) {
	b, err := d.GetContent(ctx, p)
	if err != nil {
		return "", err
	}
	if len(b) > 256 {
		return "", fmt.Errorf("link %s: too long", p)
	}
	dg, err := digest.Parse(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("link %s: %w", p, err)
	}
	return dg, nil
}

func isPathNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}
