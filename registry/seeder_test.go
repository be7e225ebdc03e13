package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/peerwire/peerwiretest"
	"github.com/shoalproject/shoal/internal/secret"
)

// Finding 4 of issue 11, at the registry: a bare BitTorrent client given a
// blob's real .torrent and the seeder's port must get no byte, nor a client
// of another cluster; a member of the registry's cluster still downloads.
func TestSeederMembersOnly(t *testing.T) {
	r := startRegistry(t, regOpts{logLevel: "warn"})
	img := pushImage(t, r.Addr, "team/closed:v1", 300_000, 1)
	d := layerDigests(t, img)[0].String()
	_, loc := torrentRedirect(t, r.URL(), "team/closed", d, nil)
	mi := fetchMetainfo(t, loc)

	for name, secrets := range map[string][]string{"bare client": nil, "other cluster": {secret.Generate()}} {
		t.Run(name, func(t *testing.T) {
			got, n := peerwiretest.Fetch(t, peerwiretest.Client(t, secrets...), mi, r.SeederAddr, 5*time.Second)
			if got != nil || n != 0 {
				t.Fatalf("%d bytes of piece data from the seeder", n)
			}
		})
	}
	t.Run("member", func(t *testing.T) {
		got := downloadFromSeeder(t, mi, r.SeederAddr)
		if sum := sha256.Sum256(got); "sha256:"+hex.EncodeToString(sum[:]) != d {
			t.Fatal("a member got other bytes")
		}
	})
}

// The seeder refuses to start without a usable join secret, and says how
// to set one.
func TestSeederNeedsClusterSecret(t *testing.T) {
	for name, co := range map[string]driver.ClusterOptions{
		"missing":      {},
		"placeholder":  {Secret: "change-me-cluster-secret-0123456789abcdef"},
		"short":        {Secret: "0123456789"},
		"unset env":    {Secret: "env:SHOAL_TEST_NO_SUCH_VARIABLE"},
		"bad previous": {Secret: secret.Generate(), PreviousSecrets: []string{"short"}},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newSeeder(nil, driver.SeederOptions{Listen: "127.0.0.1:0", MaxOpenFiles: 1}, co, nil, nil, logrus.NewEntry(logrus.New()))
			if err == nil || !strings.Contains(err.Error(), "cluster.") {
				t.Fatalf("err = %v, want a cluster secret error", err)
			}
			if co.Secret != "" && strings.Contains(err.Error(), co.Secret) {
				t.Fatalf("the error reflects the secret: %v", err)
			}
		})
	}
}

// At most max idle blob files stay open; the least recently read is closed
// and reopened on its next read; a file being read is never closed under
// the read; a dropped blob's file closes.
func TestFilePoolCapsOpenFiles(t *testing.T) {
	dir := t.TempDir()
	var opens, open atomic.Int64
	blobs := make([]*blobData, 4)
	pool := newFilePool(2)
	for i := range blobs {
		p := filepath.Join(dir, string(rune('a'+i)))
		if err := os.WriteFile(p, bytes.Repeat([]byte{byte('a' + i)}, 100), 0o600); err != nil {
			t.Fatal(err)
		}
		blobs[i] = pool.blob(1<<20, func(off int64) (io.ReadCloser, error) {
			f, err := os.Open(p)
			if err != nil {
				return nil, err
			}
			opens.Add(1)
			open.Add(1)
			return &countedFile{File: f, open: &open}, nil
		})
	}
	read := func(i int) {
		t.Helper()
		b := make([]byte, 10)
		if n, err := blobs[i].ReadAt(b, 50); err != nil || n != 10 || b[0] != byte('a'+i) {
			t.Fatalf("blob %d: %d %v %q", i, n, err, b)
		}
	}
	for i := range blobs {
		read(i)
	}
	if o, n := open.Load(), pool.open(); o != 2 || n != 2 {
		t.Fatalf("%d files open (pool says %d), want 2", o, n)
	}
	read(3) // open: no reopen
	read(2)
	if got := opens.Load(); got != 4 {
		t.Fatalf("%d opens, want 4 (recent blobs stay open)", got)
	}
	read(0) // closed earlier: reopened, and blob 3 (least recent) closes
	if got := opens.Load(); got != 5 || open.Load() != 2 {
		t.Fatalf("%d opens, %d open; want 5, 2", got, open.Load())
	}

	// Files in use are not closed by eviction: with two in use, a read of
	// a third opens it and closes it again when done.
	ra, release, err := blobs[1].acquire()
	if err != nil || ra == nil {
		t.Fatal(err)
	}
	_, release2, err := blobs[2].acquire()
	if err != nil {
		t.Fatal(err)
	}
	read(0)
	if open.Load() != 2 {
		t.Fatalf("%d open, want the 2 in use", open.Load())
	}
	b := make([]byte, 1)
	if _, err := ra.ReadAt(b, 0); err != nil || b[0] != 'b' {
		t.Fatalf("read of a file in use: %v", err)
	}
	release()
	release2()
	if open.Load() != 2 {
		t.Fatalf("%d open after release, want 2", open.Load())
	}

	for _, bd := range blobs {
		bd.Close()
	}
	if open.Load() != 0 || pool.open() != 0 {
		t.Fatalf("%d files open after every blob was dropped", open.Load())
	}
	if _, err := blobs[0].ReadAt(b, 0); !errors.Is(err, errBlobClosed) {
		t.Fatalf("read after drop: %v", err)
	}
}

type countedFile struct {
	*os.File
	open *atomic.Int64
}

func (f *countedFile) Close() error {
	f.open.Add(-1)
	return f.File.Close()
}
