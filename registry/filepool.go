package registry

import (
	"container/list"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// filePool bounds the blob files the seeder holds open. A registry seeds
// every blob of every pushed image for its idle timeout, so one descriptor
// per seeded torrent would run into the process's limit (and starve
// distribution's own connections) on a busy registry. Files are opened on
// the first read, kept while they are read, and the least recently read
// idle ones are closed when more than max are open; the next read reopens.
type filePool struct {
	max int

	mu  sync.Mutex
	lru list.List // of *blobData holding an open file, most recent first
}

func newFilePool(max int) *filePool {
	return &filePool{max: max}
}

// open reports how many files are open now.
func (p *filePool) open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.lru.Len()
}

// blob is read-only storage over one blob; open(off) gives a reader of the
// blob from off (the storage driver's: an *os.File for the filesystem
// driver, a ranged GET for object stores).
func (p *filePool) blob(pieceLength int64, open func(off int64) (io.ReadCloser, error)) *blobData {
	b := &blobData{pool: p, openAt: open}
	b.pieces = newPieceCache(pieceLength, b.readRange, time.Now)
	return b
}

// blobData is read-only torrent storage over one blob in the storage driver.
// Its state is guarded by the pool's lock.
type blobData struct {
	pool   *filePool
	openAt func(off int64) (io.ReadCloser, error)

	rc     io.ReadCloser // the open file, nil while closed
	ra     io.ReaderAt   // rc's random access
	elem   *list.Element // in pool.lru while rc is open
	users  int           // reads in progress on rc
	stream bool          // the driver gives no random access: a reader per read
	closed bool          // the torrent was dropped

	// pieces serves drivers without random access (object stores): one
	// ranged read per piece instead of one per 16 KiB chunk. Set at
	// construction, so the seeder's sweep may prune it without the lock.
	pieces *pieceCache
}

var errBlobClosed = errors.New("seeded blob closed")

// probe opens the blob once, so a blob that cannot be read fails when it
// is added rather than on every peer request.
func (b *blobData) probe() error {
	ra, release, err := b.acquire()
	if err != nil {
		return err
	}
	if ra != nil {
		release()
	}
	return nil
}

// acquire returns random access to the blob, opening it if needed, and a
// release to call when the read is done; nil ReaderAt (and no release)
// means the driver streams.
func (b *blobData) acquire() (io.ReaderAt, func(), error) {
	p := b.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case b.closed:
		return nil, nil, errBlobClosed
	case b.stream:
		return nil, nil, nil
	case b.rc == nil:
		// Opening under the pool's lock keeps the count exact; a local
		// open(2) is short, and an object store's reader is a stream
		// (below), opened per read outside the lock.
		rc, err := b.openAt(0)
		if err != nil {
			return nil, nil, fmt.Errorf("open blob for seeding: %w", err)
		}
		ra, ok := rc.(io.ReaderAt)
		if !ok {
			rc.Close()
			b.stream = true
			return nil, nil, nil
		}
		b.rc, b.ra = rc, ra
		b.elem = p.lru.PushFront(b)
	default:
		p.lru.MoveToFront(b.elem)
	}
	b.users++
	p.evictLocked()
	return b.ra, b.release, nil
}

func (b *blobData) release() {
	p := b.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	b.users--
	if b.closed && b.users == 0 {
		b.closeFileLocked()
		return
	}
	p.evictLocked()
}

// evictLocked closes the least recently read idle files beyond max. Files
// being read stay open, so the pool may exceed max by the reads in flight
// (anacrolix bounds those).
func (p *filePool) evictLocked() {
	for e := p.lru.Back(); e != nil && p.lru.Len() > p.max; {
		prev := e.Prev()
		if b := e.Value.(*blobData); b.users == 0 {
			b.closeFileLocked()
		}
		e = prev
	}
}

func (b *blobData) closeFileLocked() {
	if b.rc == nil {
		return
	}
	b.rc.Close()
	b.pool.lru.Remove(b.elem)
	b.rc, b.ra, b.elem = nil, nil, nil
}

// Close ends the storage (the torrent was dropped); a read in progress
// finishes first.
func (b *blobData) Close() error {
	p := b.pool
	p.mu.Lock()
	defer p.mu.Unlock()
	b.closed = true
	if b.users == 0 {
		b.closeFileLocked()
	}
	return nil
}

// ReadAt reads from the open file when the driver gives random access and
// otherwise opens a reader at the offset (object stores: a ranged GET).
func (b *blobData) ReadAt(buf []byte, off int64) (int, error) {
	ra, release, err := b.acquire()
	if err != nil {
		return 0, err
	}
	if ra != nil {
		defer release()
		return ra.ReadAt(buf, off)
	}
	rc, err := b.openAt(off)
	if err != nil {
		return 0, err
	}
	defer rc.Close()
	return io.ReadFull(rc, buf)
}

// readRange reads length bytes at off with one reader (object stores: one
// ranged GET, closed once the bytes are in).
func (b *blobData) readRange(off, length int64) ([]byte, error) {
	rc, err := b.openAt(off)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	buf := make([]byte, length)
	n, err := io.ReadFull(rc, buf)
	if err != nil {
		return nil, fmt.Errorf("read at %d: %w", off+int64(n), err)
	}
	return buf, nil
}
