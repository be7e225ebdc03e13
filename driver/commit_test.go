package driver

import (
	"bytes"
	"context"
	"math/rand/v2"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	"github.com/opencontainers/go-digest"
)

const testPieceLength = 64 << 10

func randomBytes(seed uint64, n int) []byte {
	rng := rand.New(rand.NewPCG(seed, seed))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func testDriver(t *testing.T) *Driver {
	t.Helper()
	return New(filesystem.New(filesystem.DriverParameters{RootDirectory: t.TempDir(), MaxThreads: 16}),
		Options{PieceLength: testPieceLength})
}

// checkInfo asserts the blob's metainfo has the piece hashes of data, the
// bytes actually committed.
func checkInfo(t *testing.T, d *Driver, dgst digest.Digest, data []byte) {
	t.Helper()
	b, err := d.Info(context.Background(), dgst)
	if err != nil {
		t.Fatal(err)
	}
	var info metainfo.Info
	if err := bencode.Unmarshal(b, &info); err != nil {
		t.Fatal(err)
	}
	want, err := metainfo.GeneratePieces(bytes.NewReader(data), testPieceLength, nil)
	if err != nil {
		t.Fatal(err)
	}
	if info.Length != int64(len(data)) || !bytes.Equal(info.Pieces, want) {
		t.Fatalf("metainfo of %s: length %d, pieces match the committed bytes: %t", dgst, info.Length, bytes.Equal(info.Pieces, want))
	}
}

// Two PATCHes to one upload run at once, as distribution does not lock an
// upload: both open the data file at offset 0 and hash what they write. The
// first writes 256 KiB, the second overwrites its first 128 KiB and closes
// first; the first closes last, so the saved piece state is the first's —
// of the right length, of bytes no longer in the file. What commits is the
// mix (distribution verifies the client's digest against the file), and the
// metainfo must describe the mix.
func TestConcurrentPatchesMetainfoMatchesCommittedBytes(t *testing.T) {
	ctx := context.Background()
	d := testDriver(t)
	upload := "/docker/registry/v2/repositories/app/_uploads/u1/data"
	a := randomBytes(1, 256<<10)
	b := randomBytes(2, 128<<10)

	w1, err := d.Writer(ctx, upload, true)
	if err != nil {
		t.Fatal(err)
	}
	w2, err := d.Writer(ctx, upload, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w1.Write(a); err != nil {
		t.Fatal(err)
	}
	// (The filesystem writer's bufio hands a write larger than its buffer
	// straight to the file, so a's bytes are in the file now.)
	if _, err := w2.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := w2.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w1.Close(); err != nil {
		t.Fatal(err)
	}
	committed, err := d.StorageDriver.GetContent(ctx, upload)
	if err != nil {
		t.Fatal(err)
	}
	if want := append(append([]byte(nil), b...), a[len(b):]...); !bytes.Equal(committed, want) {
		t.Fatal("test broken: the file is not the expected mix")
	}
	dgst := digest.FromBytes(committed)
	if err := d.Move(ctx, upload, blobDataPath(dgst)); err != nil {
		t.Fatal(err)
	}
	checkInfo(t, d, dgst, committed)
}

// A saved state of other bytes of the same length (restored from a backup,
// another registry's state) must not become a blob's metainfo either.
func TestForeignStateMetainfoMatchesCommittedBytes(t *testing.T) {
	ctx := context.Background()
	d := testDriver(t)
	upload := "/docker/registry/v2/repositories/app/_uploads/u2/data"
	real, other := randomBytes(3, 200_000), randomBytes(4, 200_000)
	w, err := d.Writer(ctx, upload, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(real); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	h := newUploadHasher(testPieceLength)
	h.Write(other)
	st, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	statePath, _ := uploadStatePath(upload)
	if err := d.StorageDriver.PutContent(ctx, statePath, st); err != nil {
		t.Fatal(err)
	}
	dgst := digest.FromBytes(real)
	if err := d.Move(ctx, upload, blobDataPath(dgst)); err != nil {
		t.Fatal(err)
	}
	checkInfo(t, d, dgst, real)
}

// The ordinary case still takes the hashes made in flight, without reading
// the blob back: a chunked upload over three requests.
func TestChunkedUploadUsesInFlightHashes(t *testing.T) {
	ctx := context.Background()
	d := testDriver(t)
	upload := "/docker/registry/v2/repositories/app/_uploads/u3/data"
	data := randomBytes(5, 300_000)
	for i, chunk := range [][]byte{data[:70_000], data[70_000:200_000], data[200_000:]} {
		w, err := d.Writer(ctx, upload, i > 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	dgst := digest.FromBytes(data)
	if err := d.Move(ctx, upload, blobDataPath(dgst)); err != nil {
		t.Fatal(err)
	}
	// Present right after the move, before anyone asked: made in flight.
	if _, err := d.StorageDriver.GetContent(ctx, metainfoPath(dgst)); err != nil {
		t.Fatalf("no metainfo after commit: %v", err)
	}
	checkInfo(t, d, dgst, data)
}
