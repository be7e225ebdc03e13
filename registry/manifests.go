package registry

import (
	"context"
	"fmt"

	"github.com/distribution/distribution/v3"
	repositorymiddleware "github.com/distribution/distribution/v3/registry/middleware/repository"
	"github.com/opencontainers/go-digest"
)

// manifestsMW is the one repository middleware through which Shoal watches
// manifest writes: each part that must react to a push (seeding its blobs,
// the referrers index) is a manifestObserver in its chain, rather than a
// middleware wrapping Manifests().Put of its own.
const manifestsMW = "shoal-manifests"

// observersOption carries the chain to the middleware; it cannot come from
// YAML.
const observersOption = "shoal.manifest-observers"

func init() {
	if err := repositorymiddleware.Register(manifestsMW, func(_ context.Context, repo distribution.Repository, options map[string]any) (distribution.Repository, error) {
		obs, ok := options[observersOption].([]manifestObserver)
		if !ok {
			return nil, fmt.Errorf("repository middleware %s is added by shoal itself; do not configure it", manifestsMW)
		}
		return &observedRepository{Repository: repo, obs: obs}, nil
	}); err != nil {
		panic(err)
	}
}

// manifestObserver is told of each manifest a push stored.
type manifestObserver interface {
	// manifestPut runs after ms stored man as dgst in repo, in chain order.
	// An error fails the push (and skips the observers after it).
	manifestPut(ctx context.Context, repo distribution.Repository, ms distribution.ManifestService, man distribution.Manifest, dgst digest.Digest) error
}

// manifestDeleteObserver is a manifestObserver with bookkeeping around a
// delete: it calls del, which deletes dgst (through the observers after
// it), and returns what del returned unless its own part must fail.
type manifestDeleteObserver interface {
	manifestObserver
	manifestDelete(ctx context.Context, repo distribution.Repository, ms distribution.ManifestService, dgst digest.Digest, del func() error) error
}

type observedRepository struct {
	distribution.Repository
	obs []manifestObserver
}

func (r *observedRepository) Manifests(ctx context.Context, options ...distribution.ManifestServiceOption) (distribution.ManifestService, error) {
	ms, err := r.Repository.Manifests(ctx, options...)
	if err != nil {
		return nil, err
	}
	return &observedManifests{ManifestService: ms, repo: r}, nil
}

type observedManifests struct {
	distribution.ManifestService
	repo *observedRepository
}

func (m *observedManifests) Put(ctx context.Context, man distribution.Manifest, options ...distribution.ManifestServiceOption) (digest.Digest, error) {
	dgst, err := m.ManifestService.Put(ctx, man, options...)
	if err != nil {
		return dgst, err
	}
	for _, o := range m.repo.obs {
		if err := o.manifestPut(ctx, m.repo.Repository, m.ManifestService, man, dgst); err != nil {
			return dgst, err
		}
	}
	return dgst, nil
}

func (m *observedManifests) Delete(ctx context.Context, dgst digest.Digest) error {
	del := func() error { return m.ManifestService.Delete(ctx, dgst) }
	for i := len(m.repo.obs) - 1; i >= 0; i-- {
		if o, ok := m.repo.obs[i].(manifestDeleteObserver); ok {
			next := del
			del = func() error { return o.manifestDelete(ctx, m.repo.Repository, m.ManifestService, dgst, next) }
		}
	}
	return del()
}
