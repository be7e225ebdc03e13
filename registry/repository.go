package registry

import (
	"context"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// seedObserver puts every blob a pushed manifest references into
// seeding, so the first node to pull finds a seeder already waiting.
type seedObserver struct{ s *Server }

func (o seedObserver) manifestPut(ctx context.Context, repo distribution.Repository, ms distribution.ManifestService, man distribution.Manifest, dgst digest.Digest) error {
	s := o.s
	if s.seeder == nil {
		return nil // not serving (yet): nothing to seed with
	}
	blobs := blobsOf(ctx, ms, man, 0)
	log := s.log.WithFields(logrus.Fields{"repository": repo.Named().Name(), "manifest": dgst, "blobs": len(blobs)})
	// The push answers now; seeding starts alongside. Blobs pushed through
	// Shoal already have metainfo, so this takes milliseconds per blob;
	// mounted blobs that predate Shoal are hashed here, off the request.
	go func() {
		ctx := context.WithoutCancel(ctx)
		for _, b := range blobs {
			if _, _, err := s.seeder.Ensure(ctx, b); err != nil {
				log.WithError(err).WithField("blob", b).Warn("could not seed blob of pushed manifest")
			}
		}
		s.metrics.pushed.Inc()
		log.Debug("seeding blobs of pushed manifest")
	}()
	return nil
}

// blobsOf lists the blobs (config and layers) of a manifest, following an
// index or manifest list into the child manifests that are present.
func blobsOf(ctx context.Context, ms distribution.ManifestService, man distribution.Manifest, depth int) []digest.Digest {
	var out []digest.Digest
	for _, ref := range man.References() {
		if !isManifestType(ref.MediaType) {
			out = append(out, ref.Digest)
			continue
		}
		if depth > 0 {
			continue // indexes of indexes are not followed further
		}
		child, err := ms.Get(ctx, ref.Digest)
		if err != nil {
			continue // a child pushed later is seeded by its own push
		}
		out = append(out, blobsOf(ctx, ms, child, depth+1)...)
	}
	return out
}

func isManifestType(mt string) bool {
	switch mt {
	case v1.MediaTypeImageManifest, v1.MediaTypeImageIndex,
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json":
		return true
	}
	return false
}
