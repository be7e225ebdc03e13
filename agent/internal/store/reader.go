// Package store is the agent's blob store: the one owner of every blob
// file, committed (the cache index, eviction, reservations) or in progress
// (partial blobs, the files an earlier process left to resume from), and
// of the way they are read: one Reader per open blob file, whether the
// blob is still downloading or cached. The mirror, the data server (found
// by infohash) and anacrolix's storage read a blob through a Reader.
package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"

	"github.com/shoalproject/shoal/agent/internal/partial"
)

// Reader is one open blob file and which of its pieces are present.
type Reader struct {
	f        *os.File // kept open: stays valid when the partial file is renamed into the cache
	has      func(i int) bool
	pieceLen int64
	length   int64

	// mu orders Open against Close: once f is closed its descriptor
	// number may name another file.
	mu     sync.RWMutex
	closed bool
}

// NewReader reads f, a blob of length bytes in pieces of pieceLen; has
// says which pieces are present. The Reader owns f.
func NewReader(f *os.File, pieceLen, length int64, has func(i int) bool) *Reader {
	return &Reader{f: f, has: has, pieceLen: pieceLen, length: length}
}

// PartialReader reads a blob while it downloads, through a descriptor of
// its own on the partial file (valid after the file is renamed into the
// cache), once b's size is known (it waits for it).
func PartialReader(ctx context.Context, b *partial.Blob) (*Reader, error) {
	size, err := b.WaitSize(ctx)
	if err != nil {
		return nil, err
	}
	f, err := b.OpenRead()
	if err != nil {
		return nil, err
	}
	return NewReader(f, b.PieceLength(), size, b.Has), nil
}

// Length is the blob's size.
func (r *Reader) Length() int64 { return r.length }

// Open opens a descriptor of the caller's own on the blob file (its own
// offset, for sendfile).
func (r *Reader) Open() (*os.File, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.closed {
		return nil, os.ErrClosed
	}
	return partial.Reopen(r.f)
}

// Close closes the file.
func (r *Reader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	return r.f.Close()
}

// HasRange reports whether bytes [off, off+n) lie in present pieces.
func (r *Reader) HasRange(off, n int64) bool {
	if r.pieceLen <= 0 || off < 0 || n <= 0 || off+n > r.length {
		return false
	}
	for i := off / r.pieceLen; i <= (off+n-1)/r.pieceLen; i++ {
		if !r.has(int(i)) {
			return false
		}
	}
	return true
}

// Readers are the open blobs of the node's torrents, by infohash.
type Readers struct {
	m sync.Map // metainfo.Hash → *Reader
}

// Lookup finds the blob of a torrent.
func (rs *Readers) Lookup(ih metainfo.Hash) (*Reader, bool) {
	v, ok := rs.m.Load(ih)
	if !ok {
		return nil, false
	}
	return v.(*Reader), true
}

// Add registers r for ih (tests and Storage).
func (rs *Readers) Add(ih metainfo.Hash, r *Reader) { rs.m.Store(ih, r) }

// Readers are the open files of the node's torrents, for the data server.
func (c *Store) Readers() *Readers { return &c.readers }

// PartialStorage is anacrolix's storage of a blob while it downloads: its
// present pieces are b's checked ones.
func (c *Store) PartialStorage(b *partial.Blob) Storage {
	return Storage{Readers: &c.readers, Path: b.Path(), Has: b.Has}
}

// CachedStorage is anacrolix's storage of the cached blob hex: every piece
// is present.
func (c *Store) CachedStorage(hex string) Storage {
	return Storage{Readers: &c.readers, Path: c.blobPath(hex), Has: func(int) bool { return true }}
}

// Storage is how anacrolix sees a blob: one file of the cache, read only,
// registered in Readers while the torrent is open. Anacrolix never writes
// it: Shoal nodes move piece data over the data path and the agent writes
// it through partial.Blob; the torrent keeps membership, availability
// (bitfield and have messages) and the standard wire for other BitTorrent
// clients. Has says which pieces are present: the partial blob's while
// downloading, every piece for a cached blob.
type Storage struct {
	Readers *Readers
	Path    string
	Has     func(i int) bool
}

func (s Storage) OpenTorrent(_ context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	f, err := os.Open(s.Path)
	if err != nil {
		return storage.TorrentImpl{}, fmt.Errorf("open torrent storage: %w", err)
	}
	r := NewReader(f, info.PieceLength, info.Length, s.Has)
	s.Readers.Add(ih, r)
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl { return piece{r: r, p: p} },
		Close: func() error {
			s.Readers.m.CompareAndDelete(ih, r)
			return r.Close()
		},
	}, nil
}

type piece struct {
	r *Reader
	p metainfo.Piece
}

func (p piece) ReadAt(b []byte, off int64) (int, error) {
	return p.r.f.ReadAt(b, p.p.Offset()+off)
}

var errReadOnly = errors.New("shoal torrent storage is read-only: pieces arrive over the data path")

func (p piece) WriteAt([]byte, int64) (int, error) { return 0, errReadOnly }

// MarkComplete and MarkNotComplete are no-ops: presence is the blob's to
// say (a failed read makes anacrolix call MarkNotComplete; the bytes are
// there all the same, checked when they arrived).
func (p piece) MarkComplete() error    { return nil }
func (p piece) MarkNotComplete() error { return nil }

func (p piece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: p.r.has(p.p.Index())}
}

// NoDefault stands in for anacrolix's default storage, which would keep a
// piece-completion database, readable by all, in the cache directory:
// every Shoal torrent brings its own storage (Storage).
type NoDefault struct{}

func (NoDefault) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{}, errors.New("shoal torrents bring their own storage")
}
