package driver

import (
	"flag"
	"testing"

	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	"github.com/distribution/distribution/v3/registry/storage/driver/testsuites"
)

// The p2p middleware is a storage driver to distribution: it must pass the
// suite every driver passes, whatever it wraps. These run distribution's
// own suite (v3.1.2) over it, as distribution's inmemory and filesystem
// tests run it over those drivers.

func TestSuiteOverInMemory(t *testing.T) {
	runSuite(t, func() (storagedriver.StorageDriver, error) {
		return New(inmemory.New(), Options{PieceLength: testPieceLength}), nil
	})
}

func TestSuiteOverFilesystem(t *testing.T) {
	root := t.TempDir()
	runSuite(t, func() (storagedriver.StorageDriver, error) {
		fs, err := filesystem.FromParameters(map[string]any{"rootdirectory": root})
		if err != nil {
			return nil, err
		}
		return New(fs, Options{PieceLength: testPieceLength}), nil
	})
}

// runSuite runs the suite in its short mode: the full mode writes a 5 GiB
// file (in memory, for inmemory) and 1 GiB of concurrent streams, which
// `make test` on a shared machine cannot afford and which exercise the
// wrapped driver rather than the middleware (it passes those paths through).
// Short mode keeps every case but that one, with smaller sizes.
func runSuite(t *testing.T, c testsuites.DriverConstructor) {
	if !testing.Short() {
		if err := flag.Set("test.short", "true"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = flag.Set("test.short", "false") })
	}
	testsuites.Driver(t, c, false)
}
