package registry

import (
	"fmt"
	"io"
	"sync"
	"time"
)

// Object stores answer a read at an offset with one HTTP request, and
// anacrolix asks storage for 16 KiB chunks: a 1 MiB piece served to a peer
// would cost 64 ranged GETs. The seeder instead reads a whole piece with one
// request the first time any part of it is wanted and keeps it briefly, long
// enough for the rest of that piece's chunk requests. Those do not arrive
// piece by piece: a peer keeps ~250 chunk requests outstanding across every
// piece it wants (measured: with room for 4 pieces of 64 KiB, each piece was
// read twice), so the cache holds a peer's request window's worth of bytes.
const (
	// pieceCacheTTL is how long a fetched piece answers reads.
	pieceCacheTTL = 5 * time.Second
	// pieceCacheBytes bounds what one blob keeps (per seeded blob being read
	// from an object store; expired pieces are freed by the seeder's sweep).
	pieceCacheBytes = 16 << 20
	// pieceCacheMinSlots keeps a few pieces even when they are large.
	pieceCacheMinSlots = 4
)

// pieceCache holds recently read pieces of one blob. fetch reads length
// bytes at off with one request; now is the clock.
type pieceCache struct {
	fetch func(off, length int64) ([]byte, error)
	now   func() time.Time
	max   int // slots

	mu    sync.Mutex
	slots []*cachedPiece // most recently used last
}

// cachedPiece is one piece, being read (done open) or read.
type cachedPiece struct {
	index int
	done  chan struct{}
	at    time.Time // when the read finished
	data  []byte
	err   error
}

func newPieceCache(pieceLength int64, fetch func(off, length int64) ([]byte, error), now func() time.Time) *pieceCache {
	return &pieceCache{fetch: fetch, now: now, max: max(pieceCacheMinSlots, int(pieceCacheBytes/max(pieceLength, 1)))}
}

// prune frees pieces past their TTL, so an idle blob holds no memory.
func (c *pieceCache) prune() {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := c.now()
	kept := c.slots[:0]
	for _, e := range c.slots {
		select {
		case <-e.done:
			if e.err != nil || now.Sub(e.at) > pieceCacheTTL {
				continue
			}
		default:
		}
		kept = append(kept, e)
	}
	clear(c.slots[len(kept):])
	c.slots = kept
}

// readAt copies bytes of piece index (at pieceOff, pieceLen long) starting
// at off within the piece into p. Concurrent readers of a piece share one
// fetch.
func (c *pieceCache) readAt(p []byte, index int, pieceOff, pieceLen, off int64) (int, error) {
	if off < 0 || off >= pieceLen {
		return 0, io.EOF
	}
	e := c.get(index, pieceOff, pieceLen)
	<-e.done
	if e.err != nil {
		return 0, e.err
	}
	n := copy(p, e.data[off:])
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

func (c *pieceCache) get(index int, pieceOff, pieceLen int64) *cachedPiece {
	c.mu.Lock()
	now := c.now()
	for i, e := range c.slots {
		if e.index != index {
			continue
		}
		select {
		case <-e.done:
			if e.err != nil || now.Sub(e.at) > pieceCacheTTL {
				c.slots = append(c.slots[:i], c.slots[i+1:]...)
				goto fetch
			}
		default: // being read: wait for it
		}
		c.slots = append(append(c.slots[:i], c.slots[i+1:]...), e)
		c.mu.Unlock()
		return e
	}
fetch:
	e := &cachedPiece{index: index, done: make(chan struct{})}
	if len(c.slots) >= c.max {
		c.slots = c.slots[1:]
	}
	c.slots = append(c.slots, e)
	c.mu.Unlock()

	data, err := c.fetch(pieceOff, pieceLen)
	if err == nil && int64(len(data)) != pieceLen {
		err = fmt.Errorf("piece %d: read %d of %d bytes", index, len(data), pieceLen)
	}
	c.mu.Lock()
	e.data, e.err, e.at = data, err, c.now()
	c.mu.Unlock()
	close(e.done)
	return e
}
