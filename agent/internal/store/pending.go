package store

import (
	"context"
	"errors"
	"sync"

	"github.com/shoalproject/shoal/agent/internal/partial"
)

// Pending is a partial blob on its way into the store: the room it holds
// in the store, and its commit once it matched its digest. End it with
// Commit, Abandon or Abort (after one of them the others do nothing).
type Pending struct {
	s *Store
	b *partial.Blob

	mu sync.Mutex
	// held is what the blob counts for in the store's use: the file an
	// earlier download left (taken over by NewPartial), then its
	// reservation.
	held int64
	done bool
}

// Pending starts b's way into the store. The bytes of an earlier
// download's file b took over are its own from now on.
func (c *Store) Pending(b *partial.Blob) *Pending {
	c.mu.Lock()
	held := c.adopted[b.Path()]
	delete(c.adopted, b.Path())
	c.mu.Unlock()
	return &Pending{s: c, b: b, held: held}
}

// Reserve makes the blob hold size bytes of the store (more than it holds
// already: a stream of unknown size grows its reservation as it arrives),
// waiting until the store has room for them: it evicts what it can (files
// of interrupted downloads first, then cached blobs nobody is reading,
// least recently used first), and otherwise waits for reservations,
// readers and downloads to give room back, until ctx ends. The store's
// use never exceeds its bound. waited says whether it had to wait.
func (p *Pending) Reserve(ctx context.Context, size int64) (waited bool, err error) {
	p.mu.Lock()
	more, done := size-p.held, p.done
	p.mu.Unlock()
	if done || more <= 0 {
		return false, nil
	}
	if waited, err = p.s.Reserve(ctx, more); err != nil {
		return waited, err
	}
	p.mu.Lock()
	if p.done { // ended meanwhile
		p.mu.Unlock()
		p.s.Unreserve(more)
		return waited, nil
	}
	p.held += more
	p.mu.Unlock()
	return waited, nil
}

// Commit moves the verified blob into the store (Store.Commit), its
// reservation becoming the blob; published is called under the store's
// lock as the blob enters the index.
func (p *Pending) Commit(published func()) (*Handle, error) {
	held, ok := p.end()
	if !ok {
		return nil, errPendingEnded
	}
	return p.s.Commit(p.b.Path(), p.b.Hex(), p.b.Size(), held, published)
}

// Abandon ends a download that failed or was stopped with err: its file
// is kept for the next download of the blob, or removed (Store.abandon),
// and its reservation returned.
func (p *Pending) Abandon(err error) {
	held, ok := p.end()
	if !ok {
		return
	}
	if err == nil {
		err = errAbandoned
	}
	p.s.abandon(p.b, err, held)
}

// Abort returns the reservation of a blob that did not make it, leaving
// its file to whoever owns it.
func (p *Pending) Abort() {
	if held, ok := p.end(); ok {
		p.s.Unreserve(held)
	}
}

var (
	errPendingEnded = errors.New("blob store: download already ended")
	errAbandoned    = errors.New("partial blob abandoned")
)

func (p *Pending) end() (held int64, ok bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done {
		return 0, false
	}
	p.done = true
	return p.held, true
}
