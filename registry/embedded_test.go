package registry

import (
	"testing"

	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/secret"
)

// `shoal run` hands the registry the join secret its agent holds: the
// embedded configuration must carry it to the seeder's options.
func TestEmbeddedConfigCarriesClusterSecret(t *testing.T) {
	s := secret.Generate()
	cfg, err := EmbeddedConfig(EmbeddedOptions{DataDir: t.TempDir(), HTTPSecret: secret.Generate(), ClusterSecret: s})
	if err != nil {
		t.Fatal(err)
	}
	var found bool
	for _, mw := range cfg.Middleware["storage"] {
		if mw.Name != driver.Name {
			continue
		}
		found = true
		o, err := driver.ParseOptions(mw.Options)
		if err != nil {
			t.Fatal(err)
		}
		got, err := o.Cluster.Secrets()
		if err != nil || len(got) != 1 || got[0] != s {
			t.Fatalf("cluster secrets %d, %v; want the one given", len(got), err)
		}
	}
	if !found {
		t.Fatal("no p2p middleware in the embedded configuration")
	}
}
