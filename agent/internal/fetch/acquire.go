package fetch

import (
	"context"
	"errors"

	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/agent/internal/store"
)

// ErrNotCached is Acquire's answer to a HEAD of a blob the store does not
// hold: nothing is downloaded for a HEAD.
var ErrNotCached = errors.New("blob not cached")

// Source is a blob as a requester reads it: cached (Flight nil), or
// downloading, its bytes readable as they arrive and are checked. Close it
// when done.
type Source struct {
	// Reader is the blob's file: the cached copy Acquire verified, or the
	// partial file (valid after it is renamed into the store).
	Reader *store.Reader
	Size   int64
	// Flight is the download being streamed (nil: cached).
	Flight *origin.Flight
	done   func() // unpins the cached blob, or leaves the flight
}

// Close releases what Acquire took.
func (s *Source) Close() {
	s.Reader.Close()
	s.done()
}

// Acquire finds the blob for a requester, once the upstream confirmed
// that req's credentials may read it (access): the cached copy, if it
// matches its digest, or else the blob's download, joined or started,
// once its size is known. A cached copy that fails its check is deleted
// (and no longer seeded) and fetched again. A HEAD (head) downloads
// nothing.
func (fe *Fetcher) Acquire(ctx context.Context, req Request, head bool) (*Source, error) {
	size, err := fe.access(ctx, &req)
	if err != nil {
		return nil, err
	}
	if src, ok := fe.cached(req.Hex); ok {
		fe.deps.Metrics.Lookup(true)
		return src, nil
	}
	fe.deps.Metrics.Lookup(false)
	if head {
		return nil, ErrNotCached
	}
	f, leave, err := fe.join(req, size)
	if err != nil {
		return nil, err
	}
	size, err = f.Blob.WaitSize(ctx)
	var r *store.Reader
	if err == nil {
		r, err = store.PartialReader(f.Blob)
	}
	if err != nil {
		leave()
		return nil, err
	}
	return &Source{Reader: r, Size: size, Flight: f, done: leave}, nil
}

// cached is the cached copy of hex, pinned, once it matched its digest.
func (fe *Fetcher) cached(hex string) (*Source, bool) {
	h, ok := fe.deps.Store.Lookup(hex)
	if !ok {
		return nil, false
	}
	r, err := h.Open()
	if err != nil {
		h.Release()
		fe.seeds.drop(hex) // don't keep offering the corrupt copy to peers
		fe.deps.Log.WithError(err).WithField("digest", "sha256:"+hex).Warn("re-fetching blob")
		return nil, false
	}
	return &Source{Reader: r, Size: h.Size(), done: h.Release}, true
}
