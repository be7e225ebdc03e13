package registry

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/distribution/distribution/v3"
	"github.com/opencontainers/go-digest"
)

// storedManifests is the manifest store under the chain: it records what
// reached it.
type storedManifests struct {
	distribution.ManifestService
	calls *[]string
}

func (s storedManifests) Put(context.Context, distribution.Manifest, ...distribution.ManifestServiceOption) (digest.Digest, error) {
	*s.calls = append(*s.calls, "store put")
	return "sha256:m", nil
}

func (s storedManifests) Delete(context.Context, digest.Digest) error {
	*s.calls = append(*s.calls, "store delete")
	return nil
}

type recorder struct {
	name   string
	calls  *[]string
	putErr error
}

func (r recorder) manifestPut(_ context.Context, _ distribution.Repository, _ distribution.ManifestService, _ distribution.Manifest, dgst digest.Digest) error {
	*r.calls = append(*r.calls, r.name+" put "+dgst.String())
	return r.putErr
}

type deleteRecorder struct{ recorder }

func (r deleteRecorder) manifestDelete(_ context.Context, _ distribution.Repository, _ distribution.ManifestService, _ digest.Digest, del func() error) error {
	*r.calls = append(*r.calls, r.name+" before delete")
	err := del()
	*r.calls = append(*r.calls, r.name+" after delete")
	return err
}

func TestManifestObserverChain(t *testing.T) {
	var calls []string
	fail := errors.New("index unavailable")
	chain := func(obs ...manifestObserver) *observedManifests {
		calls = nil
		return &observedManifests{ManifestService: storedManifests{calls: &calls}, repo: &observedRepository{obs: obs}}
	}

	m := chain(recorder{name: "seed", calls: &calls}, deleteRecorder{recorder{name: "oci", calls: &calls}})
	if _, err := m.Put(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	if want := []string{"store put", "seed put sha256:m", "oci put sha256:m"}; !reflect.DeepEqual(calls, want) {
		t.Fatalf("put: %q, want %q", calls, want)
	}
	calls = nil
	if err := m.Delete(context.Background(), "sha256:m"); err != nil {
		t.Fatal(err)
	}
	if want := []string{"oci before delete", "store delete", "oci after delete"}; !reflect.DeepEqual(calls, want) {
		t.Fatalf("delete: %q, want %q", calls, want)
	}

	// An observer's error fails the push and stops the chain.
	m = chain(recorder{name: "oci", calls: &calls, putErr: fail}, recorder{name: "later", calls: &calls})
	if _, err := m.Put(context.Background(), nil); !errors.Is(err, fail) {
		t.Fatalf("put err = %v, want %v", err, fail)
	}
	if want := []string{"store put", "oci put sha256:m"}; !reflect.DeepEqual(calls, want) {
		t.Fatalf("failed put: %q, want %q", calls, want)
	}
}
