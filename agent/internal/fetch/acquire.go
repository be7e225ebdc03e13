package fetch

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/agent/internal/partial"
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
	r, err := store.PartialReader(ctx, f.Blob)
	if err != nil {
		leave()
		return nil, err
	}
	return &Source{Reader: r, Size: r.Length(), Flight: f, done: leave}, nil
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

// Start joins the download of the blob from req's upstream or starts it,
// after the upstream confirmed (HEAD) that req's credentials may read it
// (access). Only configured upstreams are asked. The returned function
// detaches the requester; call it when done.
func (fe *Fetcher) Start(ctx context.Context, req Request) (*origin.Flight, func(), error) {
	size, err := fe.access(ctx, &req)
	if err != nil {
		return nil, nil, err
	}
	return fe.join(req, size)
}

// access makes sure req names a configured upstream (req.Base becomes its
// configured spelling) and that the upstream lets req's credentials read
// the blob; it returns the size the upstream gave (-1: none).
func (fe *Fetcher) access(ctx context.Context, req *Request) (int64, error) {
	i, err := origin.Allowed(fe.cfg.Upstreams, req.Base)
	if err != nil {
		return 0, err
	}
	req.Base = fe.cfg.Upstreams[i]
	return fe.deps.Origin.CheckAccess(ctx, req.Base, req.Repo, req.Hex, req.Auth)
}

// join attaches req to the blob's download or starts it, once req passed
// access with the upstream's size (-1: none); the requester's size, if
// any, must agree with it, and neither may exceed the cache.
func (fe *Fetcher) join(req Request, size int64) (*origin.Flight, func(), error) {
	switch {
	case size > 0 && req.Size > 0 && size != req.Size:
		return nil, nil, &origin.RequestError{Status: http.StatusBadGateway, Code: "SIZE_INVALID",
			Msg: fmt.Sprintf("upstream says blob sha256:%s has %d bytes, the request %d", req.Hex, size, req.Size)}
	case size < 0 && req.Size > 0:
		size = req.Size
	}
	if size > fe.cfg.MaxBytes {
		return nil, nil, &origin.RequestError{Status: http.StatusInsufficientStorage, Code: "SIZE_INVALID",
			Msg: fmt.Sprintf("blob sha256:%s has %d bytes, more than cache.maxBytes", req.Hex, size)}
	}
	create := func() (*partial.Blob, error) {
		b, err := fe.deps.Store.NewPartial(fe.life, req.Hex)
		if err == nil && size >= 0 {
			if err = b.SetSize(size); err != nil {
				b.Close()
			}
		}
		return b, err
	}
	f, leave, started, err := fe.flights.Join(origin.Key{Base: req.Base, Hex: req.Hex}, origin.Cred{Repo: req.Repo, Auth: req.Auth}, size, create)
	if err != nil {
		return nil, nil, err
	}
	if started {
		go fe.run(f, req)
	}
	return f, leave, nil
}
