package agent

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

// fileStorage is how anacrolix sees a blob: one file of the cache, read
// only. Anacrolix never writes it: Shoal nodes move piece data over the data
// path (dataserver.go) and the agent writes it through partial.Blob; the
// torrent keeps membership, availability (bitfield and have messages) and
// the standard wire for other BitTorrent clients. has says which pieces are
// present: the partial blob's while downloading, every piece for a cached
// blob.
type fileStorage struct {
	a    *Agent
	path string
	has  func(i int) bool
}

func (s fileStorage) OpenTorrent(_ context.Context, info *metainfo.Info, ih metainfo.Hash) (storage.TorrentImpl, error) {
	f, err := os.Open(s.path)
	if err != nil {
		return storage.TorrentImpl{}, fmt.Errorf("open torrent storage: %w", err)
	}
	t := &fileTorrent{f: f, has: s.has, pieceLen: info.PieceLength, length: info.Length}
	s.a.stores.Store(ih, t)
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl { return filePiece{t: t, p: p} },
		Close: func() error {
			s.a.stores.CompareAndDelete(ih, t)
			return t.close()
		},
	}, nil
}

// fileTorrent is one open blob file: the torrent's storage and the data
// server's source for the same blob.
type fileTorrent struct {
	f        *os.File // kept open: stays valid when the partial file is renamed into the cache
	has      func(i int) bool
	pieceLen int64
	length   int64

	// mu orders reopen against close: once f is closed its descriptor
	// number may name another file.
	mu     sync.RWMutex
	closed bool
}

// reopen opens a descriptor of the caller's own on the blob file (its own
// offset, for sendfile).
func (t *fileTorrent) reopen() (*os.File, error) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	if t.closed {
		return nil, os.ErrClosed
	}
	return partial.Reopen(t.f)
}

func (t *fileTorrent) close() error {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.closed = true
	return t.f.Close()
}

// hasRange reports whether bytes [off, off+n) lie in present pieces.
func (t *fileTorrent) hasRange(off, n int64) bool {
	if off < 0 || n <= 0 || off+n > t.length {
		return false
	}
	for i := off / t.pieceLen; i <= (off+n-1)/t.pieceLen; i++ {
		if !t.has(int(i)) {
			return false
		}
	}
	return true
}

type filePiece struct {
	t *fileTorrent
	p metainfo.Piece
}

func (p filePiece) ReadAt(b []byte, off int64) (int, error) {
	return p.t.f.ReadAt(b, p.p.Offset()+off)
}

var errReadOnly = errors.New("shoal torrent storage is read-only: pieces arrive over the data path")

func (p filePiece) WriteAt([]byte, int64) (int, error) { return 0, errReadOnly }

// MarkComplete and MarkNotComplete are no-ops: presence is the blob's to
// say (a failed read makes anacrolix call MarkNotComplete; the bytes are
// there all the same, checked when they arrived).
func (p filePiece) MarkComplete() error    { return nil }
func (p filePiece) MarkNotComplete() error { return nil }

func (p filePiece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: p.t.has(p.p.Index())}
}

// noDefaultStorage stands in for anacrolix's default storage, which would
// keep a piece-completion database, readable by all, in the cache
// directory: every Shoal torrent brings its own storage (fileStorage).
type noDefaultStorage struct{}

func (noDefaultStorage) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{}, errors.New("shoal torrents bring their own storage")
}
