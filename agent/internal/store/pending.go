package store

import (
	"sync"

	"github.com/shoalproject/shoal/agent/internal/partial"
)

// Pending is a partial blob on its way into the store: the room reserved
// for it, and its commit once it matched its digest. End it with Commit or
// Abort (Abort after Commit does nothing).
type Pending struct {
	s *Store
	b *partial.Blob

	mu        sync.Mutex
	reserved  int64
	committed bool
}

// Pending starts b's way into the store.
func (c *Store) Pending(b *partial.Blob) *Pending { return &Pending{s: c, b: b} }

// Reserve accounts the blob's size in the store once it is known (once:
// later calls change nothing), evicting to make room (Store.Reserve).
func (p *Pending) Reserve(size int64) {
	p.mu.Lock()
	if p.reserved != 0 || size <= 0 || p.committed {
		p.mu.Unlock()
		return
	}
	p.reserved = size
	p.mu.Unlock()
	p.s.Reserve(size)
}

// Commit moves the verified blob into the store (Store.Commit), its
// reservation becoming the blob; published is called under the store's
// lock as the blob enters the index.
func (p *Pending) Commit(published func()) (*Handle, error) {
	p.mu.Lock()
	reserved := p.reserved
	p.committed = true
	p.mu.Unlock()
	return p.s.Commit(p.b.Path(), p.b.Hex(), p.b.Size(), reserved, published)
}

// Abort returns the reservation of a blob that did not make it.
func (p *Pending) Abort() {
	p.mu.Lock()
	reserved := p.reserved
	done := p.committed
	p.committed = true
	p.mu.Unlock()
	if !done && reserved > 0 {
		p.s.Unreserve(reserved)
	}
}
