package registry

import (
	"context"
	"fmt"

	"github.com/distribution/distribution/v3"
	repositorymiddleware "github.com/distribution/distribution/v3/registry/middleware/repository"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

// seedOnPush is the repository middleware that watches manifest PUTs and
// puts every blob they reference into seeding, so the first node to pull
// finds a seeder already waiting.
const seedOnPush = "p2p-seed"

// serverOption carries the *Server to the middleware; it cannot come from
// YAML.
const serverOption = "shoal.server"

func init() {
	if err := repositorymiddleware.Register(seedOnPush, newSeedingRepository); err != nil {
		panic(err)
	}
}

func newSeedingRepository(_ context.Context, repo distribution.Repository, options map[string]any) (distribution.Repository, error) {
	s, ok := options[serverOption].(*Server)
	if !ok {
		return nil, fmt.Errorf("repository middleware %s is added by shoal itself; do not configure it", seedOnPush)
	}
	return &seedingRepository{Repository: repo, s: s}, nil
}

type seedingRepository struct {
	distribution.Repository
	s *Server
}

func (r *seedingRepository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &seedingManifests{ManifestService: ms, repo: r}, nil
}

type seedingManifests struct {
	distribution.ManifestService
	repo *seedingRepository
}

func (m *seedingManifests) Put(ctx context.Context, man distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	dgst, err := m.ManifestService.Put(ctx, man, options...)
	if err != nil {
		return dgst, err
	}
	s := m.repo.s
	if s.seeder == nil {
		return dgst, nil // not serving (yet): nothing to seed with
	}
	blobs := m.blobsOf(ctx, man, 0)
	log := s.log.WithFields(logrus.Fields{"repository": m.repo.Named().Name(), "manifest": dgst, "blobs": len(blobs)})
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
	return dgst, nil
}

// blobsOf lists the blobs (config and layers) of a manifest, following an
// index or manifest list into the child manifests that are present.
func (m *seedingManifests) blobsOf(ctx context.Context, man distribution.Manifest, depth int) []digest.Digest {
	var out []digest.Digest
	for _, ref := range man.References() {
		if !isManifestType(ref.MediaType) {
			out = append(out, ref.Digest)
			continue
		}
		if depth > 0 {
			continue // indexes of indexes are not followed further
		}
		child, err := m.ManifestService.Get(ctx, ref.Digest)
		if err != nil {
			continue // a child pushed later is seeded by its own push
		}
		out = append(out, m.blobsOf(ctx, child, depth+1)...)
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
