package nodes

import (
	"context"
	"crypto/ed25519"
	"sync"
	"time"
)

// ForgetFactor: a node that stops heartbeating is listed as dead for this
// many TTLs before it disappears, so operators can see it went away.
const ForgetFactor = 10

// Memory is the in-process Store and KeyStore (the embedded mode's). It
// mirrors the Redis store's semantics so both pass the same suites.
type Memory struct {
	// now is the clock records expire by (see jobs.Memory).
	now func() time.Time

	mu    sync.Mutex
	nodes map[string]memNode
	pins  map[string]memPin
}

type memNode struct {
	n       Node
	purgeAt time.Time
}

type memPin struct {
	key       ed25519.PublicKey
	last      time.Time
	expiresAt time.Time
}

// NewMemory returns an empty store whose reads expire records by now (nil:
// time.Now).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{now: now, nodes: map[string]memNode{}, pins: map[string]memPin{}}
}

func (m *Memory) PutNode(_ context.Context, now time.Time, n Node, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n.LastSeen = now
	n.ExpiresAt = now.Add(ttl)
	m.nodes[n.ID] = memNode{n: n, purgeAt: now.Add(ttl * ForgetFactor)}
	return nil
}

func (m *Memory) ListNodes(context.Context) ([]Node, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	out := []Node{}
	for id, e := range m.nodes {
		if !now.Before(e.purgeAt) {
			delete(m.nodes, id)
			continue
		}
		out = append(out, e.n)
	}
	Sort(out)
	return out, nil
}

func (m *Memory) EnrollNode(_ context.Context, now time.Time, id string, key ed25519.PublicKey, at time.Time, keep time.Duration) (ed25519.PublicKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pins[id]
	if ok && !now.Before(p.expiresAt) {
		ok = false
	}
	if ok && !p.key.Equal(key) {
		return p.key, ErrKeyMismatch
	}
	if ok && !at.After(p.last) {
		return p.key, ErrReplay
	}
	m.pins[id] = memPin{key: key, last: at, expiresAt: now.Add(keep)}
	return key, nil
}

func (m *Memory) NodeKey(_ context.Context, id string) (ed25519.PublicKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pins[id]
	if !ok || !m.now().Before(p.expiresAt) {
		return nil, ErrNotFound
	}
	return p.key, nil
}

func (m *Memory) ForgetNode(_ context.Context, id string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	_, pinned := m.pins[id]
	_, listed := m.nodes[id]
	delete(m.pins, id)
	delete(m.nodes, id)
	if !pinned && !listed {
		return ErrNotFound
	}
	return nil
}
