package partial

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"
)

func blobOf(t *testing.T, size int) ([]byte, string) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	sum := sha256.Sum256(data)
	return data, hex.EncodeToString(sum[:])
}

func newBlob(t *testing.T, want string) *Blob {
	t.Helper()
	b, err := Create(context.Background(), filepath.Join(t.TempDir(), "p"), want)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func waitCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestPiecesOutOfOrder(t *testing.T) {
	const pl = 1024
	data, want := blobOf(t, 5*pl+100)
	b := newBlob(t, want)
	if err := b.SetLayout(int64(len(data)), pl); err != nil {
		t.Fatal(err)
	}
	piece := func(i int) []byte { return data[i*pl : min((i+1)*pl, len(data))] }
	for _, i := range []int{3, 5, 1} {
		if err := b.WritePiece(i, piece(i), true); err != nil {
			t.Fatal(err)
		}
	}
	if end, _, _, _, _ := b.Readable(); end != 0 {
		t.Fatalf("readable %d before piece 0 arrived", end)
	}
	b.WritePiece(0, piece(0), false)
	if end, _, _, _, _ := b.Readable(); end != 2*pl {
		t.Fatalf("readable %d, want the prefix of pieces 0-1", end)
	}
	if !b.Present(0) || b.Has(0) || b.Unchecked() != 1 {
		t.Fatalf("unchecked piece 0: present=%v has=%v unchecked=%d", b.Present(0), b.Has(0), b.Unchecked())
	}
	if err := b.WritePiece(2, piece(2)[:10], true); err == nil {
		t.Fatal("a short piece was accepted")
	}
	b.WritePiece(2, piece(2), true)
	b.WritePiece(4, piece(4), true)
	if !b.Complete() {
		t.Fatal("not complete with every piece written")
	}
	if err := b.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	end, size, sealed, _, _ := b.Readable()
	if !sealed || end != size || size != int64(len(data)) {
		t.Fatalf("sealed=%v end=%d size=%d", sealed, end, size)
	}
	if !b.Has(0) {
		t.Fatal("the digest did not vouch for the unchecked piece")
	}
	f, err := b.OpenRead()
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	got, _ := io.ReadAll(f)
	if !bytes.Equal(got, data) {
		t.Fatal("file content differs")
	}
}

func TestDigestMismatchHoldsLastByte(t *testing.T) {
	data, _ := blobOf(t, 3000)
	_, other := blobOf(t, 10)
	b := newBlob(t, other)
	if err := b.SetSize(int64(len(data))); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(0, data); err != nil {
		t.Fatal(err)
	}
	err := b.Wait(waitCtx(t))
	if !errors.Is(err, ErrDigest) {
		t.Fatalf("Wait = %v, want a digest mismatch", err)
	}
	if end, _, sealed, rerr, _ := b.Readable(); end != int64(len(data))-1 || sealed || rerr == nil {
		t.Fatalf("readable end=%d sealed=%v err=%v: the last byte must never be released", end, sealed, rerr)
	}
}

func TestAppendResumesAndRejectsGaps(t *testing.T) {
	const pl = 100
	data, want := blobOf(t, 950)
	b := newBlob(t, want)
	b.SetLayout(int64(len(data)), pl)
	b.WritePiece(5, data[500:600], true)
	if err := b.Append(0, data[:250]); err != nil {
		t.Fatal(err)
	}
	if !b.Has(1) || b.Present(2) || b.Prefix() != 250 {
		t.Fatalf("after 250 streamed bytes: has1=%v present2=%v prefix=%d", b.Has(1), b.Present(2), b.Prefix())
	}
	if err := b.Append(300, data[300:400]); err == nil {
		t.Fatal("a write beyond the prefix was accepted")
	}
	if err := b.Append(250, data[250:]); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(900, make([]byte, 100)); err == nil {
		t.Fatal("bytes beyond the size were accepted")
	}
	if err := b.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
}

func TestSizeContradiction(t *testing.T) {
	b := newBlob(t, "00")
	if err := b.SetSize(10); err != nil {
		t.Fatal(err)
	}
	if err := b.SetSize(11); err == nil {
		t.Fatal("contradicting size accepted")
	}
	if err := b.SetLayout(12, 4); err == nil {
		t.Fatal("layout contradicting the size accepted")
	}
}

func TestCloseWakesWaiters(t *testing.T) {
	b, err := Create(context.Background(), filepath.Join(t.TempDir(), "p"), "00")
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := b.WaitSize(context.Background()); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	b.Close()
	select {
	case err := <-errc:
		if err == nil {
			t.Fatal("WaitSize succeeded on a closed blob")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not wake WaitSize")
	}
}

// Lent buffers are hashed instead of read back, each given back exactly
// once, in and out of order, and also when the blob fails.
func TestLentBuffers(t *testing.T) {
	const pl = 1000
	data, want := blobOf(t, 20*pl+7)
	b := newBlob(t, want)
	if err := b.SetLayout(int64(len(data)), pl); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	returned := map[int]int{}
	order := []int{1, 0, 2, 3, 5, 4, 20, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}
	for _, i := range order {
		piece := slices.Clone(data[i*pl : min((i+1)*pl, len(data))])
		if err := b.WritePieceLent(i, piece, true, func() { mu.Lock(); returned[i]++; mu.Unlock() }); err != nil {
			t.Fatal(err)
		}
	}
	// A second write of a present piece is not lent: given back at once.
	b.WritePieceLent(3, slices.Clone(data[3*pl:4*pl]), true, func() { mu.Lock(); returned[-3]++; mu.Unlock() })
	if err := b.Wait(waitCtx(t)); err != nil {
		t.Fatal(err)
	}
	b.Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(returned)
		mu.Unlock()
		if n == len(order)+1 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, i := range append(order, -3) {
		if returned[i] != 1 {
			t.Errorf("buffer of piece %d given back %d times, want once", i, returned[i])
		}
	}
}

// A ranged reader ending before the blob does gets checked bytes only:
// unchecked pieces are checked on demand, and a bad one fails the blob.
func TestEnsureChecked(t *testing.T) {
	const pl = 100
	data, want := blobOf(t, 450)
	b := newBlob(t, want)
	b.SetLayout(int64(len(data)), pl)
	good := func(i int, p []byte) bool { return bytes.Equal(p, data[i*pl:min((i+1)*pl, len(data))]) }
	calls := 0
	b.SetVerifier(func(i int, p []byte) bool { calls++; return good(i, p) })
	b.WritePiece(0, data[:100], false)
	b.WritePiece(1, data[100:200], true)
	bad := bytes.Repeat([]byte{'x'}, 100)
	b.WritePiece(2, bad, false)
	if err := b.EnsureChecked(50, 100); err != nil || !b.Has(0) || calls != 1 {
		t.Fatalf("EnsureChecked(50, 100) = %v, has0=%v, checks=%d", err, b.Has(0), calls)
	}
	if err := b.EnsureChecked(0, 200); err != nil || calls != 1 {
		t.Fatalf("checked pieces checked again: %v, %d checks", err, calls)
	}
	if err := b.EnsureChecked(150, 100); !errors.Is(err, ErrDigest) {
		t.Fatalf("bad piece: EnsureChecked = %v, want a digest error", err)
	}
	if _, _, _, rerr, _ := b.Readable(); rerr == nil {
		t.Fatal("a piece that failed its check did not fail the blob")
	}
}

// Writers of the same piece race: a later one must never overwrite a piece
// another made present (and lent to the hasher), or the blob seals while
// its file holds other bytes.
func TestRacingWritersNeverOverwrite(t *testing.T) {
	const pl = 64 << 10
	data, want := blobOf(t, 2*pl)
	bad := bytes.Repeat([]byte{0xee}, pl)
	dir := t.TempDir()
	for round := range 200 {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		b, err := Create(ctx, filepath.Join(dir, "p"), want)
		if err != nil {
			t.Fatal(err)
		}
		b.SetLayout(int64(len(data)), pl)
		b.WritePiece(1, data[pl:], true)
		var wg sync.WaitGroup
		start := make(chan struct{})
		for k := range 4 {
			wg.Go(func() {
				<-start
				p := data[:pl]
				if k%2 == 1 {
					p = bad
				}
				b.WritePieceLent(0, slices.Clone(p), false, func() {})
			})
		}
		close(start)
		wg.Wait()
		if err := b.Wait(ctx); err == nil {
			f, _ := b.OpenRead()
			got, _ := io.ReadAll(f)
			f.Close()
			if !bytes.Equal(got, data) {
				t.Fatalf("round %d: the blob sealed while its file holds other bytes", round)
			}
		}
		b.Close()
		cancel()
	}
}

// A download killed mid-blob leaves its file; the next one keeps the
// pieces whose SHA-1 matches, skips holes and damaged pieces, fetches the
// rest, and the whole still has to match the digest.
func TestResumeRecoversVerifiedPieces(t *testing.T) {
	const pl = 64 << 10
	data, want := blobOf(t, 10*pl+100)
	ctx := waitCtx(t)
	dir := t.TempDir()
	first, err := Create(ctx, filepath.Join(dir, "a.1"), want)
	if err != nil {
		t.Fatal(err)
	}
	first.SetLayout(int64(len(data)), pl)
	for _, i := range []int{0, 1, 4, 5, 10} {
		off := i * pl
		if err := first.WritePiece(i, data[off:min(off+pl, len(data))], true); err != nil {
			t.Fatal(err)
		}
	}
	first.Close()
	// Piece 5 damaged on disk (a torn write).
	f, _ := os.OpenFile(filepath.Join(dir, "a.1"), os.O_RDWR, 0)
	f.WriteAt([]byte("torn"), 5*pl+10)
	f.Close()

	b, err := Resume(ctx, filepath.Join(dir, "a.2"), want, filepath.Join(dir, "a.1"))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.SetLayout(int64(len(data)), pl); err != nil {
		t.Fatal(err)
	}
	verify := func(i int, p []byte) bool {
		off := i * pl
		return bytes.Equal(p, data[off:min(off+pl, len(data))])
	}
	n, err := b.Recover(verify)
	if err != nil || n != 4 {
		t.Fatalf("Recover = %d, %v; want pieces 0, 1, 4, 10", n, err)
	}
	if got := b.Missing(); !slices.Equal(got, []int{2, 3, 5, 6, 7, 8, 9}) {
		t.Fatalf("missing after Recover: %v", got)
	}
	if n, _ := b.Recover(verify); n != 0 {
		t.Fatal("Recover ran twice")
	}
	for _, i := range b.Missing() {
		off := i * pl
		if err := b.WritePiece(i, data[off:min(off+pl, len(data))], true); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("resumed blob: %v", err)
	}
}

// A stream without piece hashes stopped mid-way continues from the prefix
// its sha256 checkpoint covers, once the file hashes to it again; a file
// changed since, or without a checkpoint, starts from zero.
func TestResumeStreamFromCheckpoint(t *testing.T) {
	size := 3*checkpointEvery + 12345
	data, want := blobOf(t, size)
	ctx := waitCtx(t)
	dir := t.TempDir()
	// stopped writes a stream's first part and stops the blob (as a failed
	// or stopped download does), leaving its file and checkpoint at from.
	stopped := func(from string, n int) {
		t.Helper()
		b, err := Create(ctx, from, want)
		if err != nil {
			t.Fatal(err)
		}
		b.SetSize(int64(size))
		if err := b.Append(0, data[:n]); err != nil {
			t.Fatal(err)
		}
		b.Stop(errors.New("agent stopping")) // once the hasher caught up
		b.Close()
	}
	resume := func(from, to string) (*Blob, int64) {
		t.Helper()
		b, err := Resume(ctx, to, want, from)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { b.Close() })
		b.SetSize(int64(size))
		n, err := b.RecoverPrefix()
		if err != nil {
			t.Fatal(err)
		}
		return b, n
	}

	stopped(filepath.Join(dir, "a.1"), 2*checkpointEvery+100)
	b, n := resume(filepath.Join(dir, "a.1"), filepath.Join(dir, "a.2"))
	if n != 2*checkpointEvery+100 || b.Prefix() != n {
		t.Fatalf("RecoverPrefix kept %d (prefix %d), want the %d bytes hashed before the stop", n, b.Prefix(), 2*checkpointEvery+100)
	}
	if m, _ := b.RecoverPrefix(); m != 0 {
		t.Fatal("RecoverPrefix ran twice")
	}
	if err := b.Append(n, data[n:]); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("resumed stream: %v", err)
	}
	if _, err := os.Stat(StatePath(b.Path())); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("checkpoint of a sealed blob still there: %v", err)
	}

	// One byte of the prefix changed on disk: nothing is kept.
	stopped(filepath.Join(dir, "b.1"), 2*checkpointEvery)
	f, _ := os.OpenFile(filepath.Join(dir, "b.1"), os.O_RDWR, 0)
	f.WriteAt([]byte{data[4096] ^ 1}, 4096)
	f.Close()
	b, n = resume(filepath.Join(dir, "b.1"), filepath.Join(dir, "b.2"))
	if n != 0 || b.Prefix() != 0 {
		t.Fatalf("RecoverPrefix kept %d bytes of a file changed since its checkpoint", n)
	}
	if fi, _ := os.Stat(b.Path()); fi.Size() != 0 {
		t.Errorf("the untrusted file keeps %d bytes", fi.Size())
	}
	if err := b.Append(0, data); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(ctx); err != nil {
		t.Fatalf("stream started afresh: %v", err)
	}

	// No checkpoint (an older agent's file): nothing is kept.
	stopped(filepath.Join(dir, "c.1"), 2*checkpointEvery)
	os.Remove(StatePath(filepath.Join(dir, "c.1")))
	if _, n = resume(filepath.Join(dir, "c.1"), filepath.Join(dir, "c.2")); n != 0 {
		t.Fatalf("RecoverPrefix kept %d bytes without a checkpoint", n)
	}
}
