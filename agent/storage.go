package agent

import (
	"context"
	"fmt"
	"os"
	"sync"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

// fileStorage stores a single-file torrent directly in one file of the
// cache: the partial file while downloading, the blob file while seeding. It
// keeps piece completion in memory and reports unknown pieces as "known
// incomplete" so a fresh download never hashes the empty file (the default
// storages would hash the whole torrent before downloading).
type fileStorage struct {
	path     string
	complete bool // every piece present and verified (seeding a cached blob)
}

func (s fileStorage) OpenTorrent(_ context.Context, info *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	flag := os.O_RDWR
	if s.complete {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(s.path, flag, 0)
	if err != nil {
		return storage.TorrentImpl{}, fmt.Errorf("open torrent storage: %w", err)
	}
	t := &fileTorrent{f: f, done: make([]bool, info.NumPieces()), readOnly: s.complete}
	for i := range t.done {
		t.done[i] = s.complete
	}
	return storage.TorrentImpl{
		Piece: func(p metainfo.Piece) storage.PieceImpl { return filePiece{t: t, p: p} },
		Close: func() error { return f.Close() },
	}, nil
}

type fileTorrent struct {
	f        *os.File
	readOnly bool
	mu       sync.Mutex
	done     []bool
}

type filePiece struct {
	t *fileTorrent
	p metainfo.Piece
}

func (p filePiece) ReadAt(b []byte, off int64) (int, error) {
	return p.t.f.ReadAt(b, p.p.Offset()+off)
}

func (p filePiece) WriteAt(b []byte, off int64) (int, error) {
	if p.t.readOnly {
		return 0, fmt.Errorf("seeding storage is read-only")
	}
	return p.t.f.WriteAt(b, p.p.Offset()+off)
}

func (p filePiece) MarkComplete() error {
	p.t.mu.Lock()
	p.t.done[p.p.Index()] = true
	p.t.mu.Unlock()
	return nil
}

func (p filePiece) MarkNotComplete() error {
	p.t.mu.Lock()
	p.t.done[p.p.Index()] = false
	p.t.mu.Unlock()
	return nil
}

func (p filePiece) Completion() storage.Completion {
	p.t.mu.Lock()
	defer p.t.mu.Unlock()
	return storage.Completion{Ok: true, Complete: p.t.done[p.p.Index()]}
}
