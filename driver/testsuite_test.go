package driver

import (
	"flag"
	"reflect"
	"sort"
	"strings"
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
	}, map[string]string{
		// Upstream's inmemory driver fails this case by itself in about
		// 1 run of 12 (26 of 300 runs over a bare inmemory.New()): its
		// mfs find() descends into a child named like the path's last
		// component, so deleting /a/a when /a/a/x exists answers "not
		// found" whenever the suite's random dirname is one segment. The
		// filesystem run below covers the case over the middleware.
		"TestDeleteOnlyDeletesSubpaths": "upstream inmemory bug with a one-segment dirname (mfs find)",
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
	}, nil)
}

// runSuite runs the suite in its short mode: the full mode writes a 5 GiB
// file (in memory, for inmemory) and 1 GiB of concurrent streams, which
// `make test` on a shared machine cannot afford and which exercise the
// wrapped driver rather than the middleware (it passes those paths through).
// Short mode keeps every case but that one, with smaller sizes.
// runSuite runs the suite in short mode, without the cases in skip (name:
// why), which are logged.
func runSuite(t *testing.T, c testsuites.DriverConstructor, skip map[string]string) {
	if !testing.Short() {
		if err := flag.Set("test.short", "true"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = flag.Set("test.short", "false") })
	}
	if len(skip) > 0 {
		// testify selects cases by a regexp of method names; RE2 has no
		// negation, so list every other case of the suite.
		var run []string
		typ := reflect.TypeOf(&testsuites.DriverSuite{})
		for i := 0; i < typ.NumMethod(); i++ {
			if n := typ.Method(i).Name; strings.HasPrefix(n, "Test") && skip[n] == "" {
				run = append(run, n)
			}
		}
		sort.Strings(run)
		if err := flag.Set("testify.m", "^("+strings.Join(run, "|")+")$"); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = flag.Set("testify.m", "") })
		for n, why := range skip {
			t.Logf("not run: %s: %s", n, why)
		}
	}
	testsuites.Driver(t, c, false)
}
