package registry

import (
	"bytes"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

type fetchCounter struct {
	blob  []byte
	calls atomic.Int64
	fail  atomic.Bool
	gate  chan struct{} // when set, fetches wait for it
}

func (f *fetchCounter) fetch(off, length int64) ([]byte, error) {
	f.calls.Add(1)
	if f.gate != nil {
		<-f.gate
	}
	if f.fail.Load() {
		return nil, errors.New("object store down")
	}
	end := min(off+length, int64(len(f.blob)))
	return append([]byte(nil), f.blob[off:end]...), nil
}

func testBlob(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i * 7)
	}
	return b
}

// readPiece reads piece i as anacrolix does: 16 KiB chunks in order.
func readPiece(t *testing.T, c *pieceCache, blob []byte, i int, pl int64) {
	t.Helper()
	off := int64(i) * pl
	length := min(pl, int64(len(blob))-off)
	for o := int64(0); o < length; o += 16 << 10 {
		buf := make([]byte, min(16<<10, length-o))
		n, err := c.readAt(buf, i, off, length, o)
		if err != nil || n != len(buf) {
			t.Fatalf("piece %d at %d: n=%d err=%v", i, o, n, err)
		}
		if !bytes.Equal(buf, blob[off+o:off+o+int64(n)]) {
			t.Fatalf("piece %d at %d: wrong bytes", i, o)
		}
	}
}

func TestPieceCacheOneReadPerPiece(t *testing.T) {
	const pl = pieceCacheBytes / 4 // 4 slots
	blob := testBlob(5*pl + 1000)  // last piece short
	f := &fetchCounter{blob: blob}
	now := time.Unix(0, 0)
	c := newPieceCache(pieceCacheBytes/4, f.fetch, func() time.Time { return now })
	for i := 0; i < 6; i++ {
		readPiece(t, c, blob, i, pl)
	}
	if got := f.calls.Load(); got != 6 {
		t.Fatalf("%d fetches for 6 pieces, want 6", got)
	}
	// Piece 5 is still cached; piece 0 was evicted (4 slots).
	readPiece(t, c, blob, 5, pl)
	if f.calls.Load() != 6 {
		t.Fatal("recent piece fetched again")
	}
	readPiece(t, c, blob, 0, pl)
	if f.calls.Load() != 7 {
		t.Fatal("evicted piece not fetched again")
	}
	// Past the TTL a piece is read again, and prune frees the rest.
	now = now.Add(pieceCacheTTL + time.Second)
	readPiece(t, c, blob, 0, pl)
	if f.calls.Load() != 8 {
		t.Fatal("expired piece served from cache")
	}
	now = now.Add(pieceCacheTTL + time.Second)
	c.prune()
	if len(c.slots) != 0 {
		t.Fatalf("%d pieces kept past their TTL", len(c.slots))
	}
	if c := newPieceCache(64<<10, f.fetch, time.Now); c.max != pieceCacheBytes/(64<<10) {
		t.Fatalf("64 KiB pieces: %d slots", c.max)
	}
}

func TestPieceCacheSharesAFetchAndForgetsErrors(t *testing.T) {
	const pl = 64 << 10
	blob := testBlob(2 * pl)
	f := &fetchCounter{blob: blob, gate: make(chan struct{})}
	c := newPieceCache(pl, f.fetch, time.Now)
	var wg sync.WaitGroup
	for r := 0; r < 8; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, 1024)
			if n, err := c.readAt(buf, 1, pl, pl, int64(r)*1024); err != nil || !bytes.Equal(buf[:n], blob[pl+r*1024:pl+r*1024+n]) {
				t.Errorf("reader %d: %v", r, err)
			}
		}()
	}
	time.Sleep(50 * time.Millisecond)
	close(f.gate)
	wg.Wait()
	if got := f.calls.Load(); got != 1 {
		t.Fatalf("%d fetches by 8 concurrent readers, want 1", got)
	}
	f.fail.Store(true)
	if _, err := c.readAt(make([]byte, 10), 0, 0, pl, 0); err == nil {
		t.Fatal("error swallowed")
	}
	f.fail.Store(false)
	if _, err := c.readAt(make([]byte, 10), 0, 0, pl, 0); err != nil {
		t.Fatalf("error cached: %v", err)
	}
	// A short read from the store is an error, not a short piece.
	short := &fetchCounter{blob: blob[:pl/2]}
	if _, err := newPieceCache(pl, short.fetch, time.Now).readAt(make([]byte, 10), 0, 0, pl, 0); err == nil {
		t.Fatal("short piece accepted")
	}
}
