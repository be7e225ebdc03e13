package preheat

import (
	"context"
	"crypto/ed25519"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/shoalproject/shoal/preheat/traffic"
)

// MemoryStore is the single-process Store for the embedded mode. It mirrors
// RedisStore's semantics (TTLs, dedupe, leases, retention) so both run the
// same test suite; jobs do not survive a restart of the process.
type MemoryStore struct {
	*traffic.Memory

	mu sync.Mutex
	// now is the clock records expire by, as Redis's is for RedisStore:
	// writers set deadlines from the now they pass, reads drop what is
	// past its deadline by this clock.
	now    func() time.Time
	forget time.Duration
	nodes  map[string]memNode
	pins   map[string]memPin
	seq    int64
	jobs   map[int64]*memJob
	dedupe map[string]int64
	leases map[int64]memLease
	seen   map[string]time.Time
	// seenSweep is the size of seen at which expired entries are next
	// dropped: twice what survived the last sweep, so the sweep costs
	// O(1) per MarkSeen and seen stays within twice the live ids.
	seenSweep int
	active    map[int64]bool
	progress  map[int64]map[string]Progress
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

type memJob struct {
	j         Job
	expiresAt time.Time // zero while unfinished
}

type memLease struct {
	owner     string
	expiresAt time.Time
}

// NewMemoryStore returns an empty store. Nodes are forgotten forgetFactor x
// their TTL after their last heartbeat (they show as dead until then).
func NewMemoryStore() *MemoryStore {
	return &MemoryStore{
		Memory:    traffic.NewMemory(),
		now:       time.Now,
		forget:    nodeForgetFactor,
		nodes:     map[string]memNode{},
		pins:      map[string]memPin{},
		jobs:      map[int64]*memJob{},
		dedupe:    map[string]int64{},
		leases:    map[int64]memLease{},
		seen:      map[string]time.Time{},
		seenSweep: minSeenSweep,
		active:    map[int64]bool{},
		progress:  map[int64]map[string]Progress{},
	}
}

// minSeenSweep is the smallest size of the delivery id set worth sweeping.
const minSeenSweep = 1024

// nodeForgetFactor: a node that stops heartbeating is listed as dead for
// this many TTLs before it disappears, so operators can see it went away.
const nodeForgetFactor = 10

func (m *MemoryStore) PutNode(_ context.Context, now time.Time, n Node, ttl time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	n.LastSeen = now
	n.ExpiresAt = now.Add(ttl)
	m.nodes[n.ID] = memNode{n: n, purgeAt: now.Add(ttl * nodeForgetFactor)}
	return nil
}

func (m *MemoryStore) ListNodes(context.Context) ([]Node, error) {
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
	sort.Slice(out, func(i, k int) bool { return out[i].ID < out[k].ID })
	return out, nil
}

// live returns the job unless it expired; callers hold mu.
func (m *MemoryStore) live(id int64) (*memJob, bool) {
	e, ok := m.jobs[id]
	if !ok {
		return nil, false
	}
	if !e.expiresAt.IsZero() && !m.now().Before(e.expiresAt) {
		delete(m.jobs, id)
		delete(m.progress, id)
		return nil, false
	}
	return e, true
}

func (m *MemoryStore) CreateJob(_ context.Context, j *Job) (*Job, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if j.DedupeKey != "" {
		if id, ok := m.dedupe[j.DedupeKey]; ok {
			if e, ok := m.live(id); ok && !e.j.State.Terminal() {
				c := e.j
				return &c, false, nil
			}
		}
	}
	m.seq++
	c := *j
	c.ID = m.seq
	m.jobs[c.ID] = &memJob{j: c}
	m.active[c.ID] = true
	if c.DedupeKey != "" {
		m.dedupe[c.DedupeKey] = c.ID
	}
	out := c
	return &out, true, nil
}

func (m *MemoryStore) GetJob(_ context.Context, id int64) (*Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.live(id)
	if !ok {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	c := e.j
	return &c, nil
}

func (m *MemoryStore) ListJobs(_ context.Context, limit int) ([]*Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	ids := make([]int64, 0, len(m.jobs))
	for id := range m.jobs {
		ids = append(ids, id)
	}
	sort.Slice(ids, func(i, k int) bool { return ids[i] > ids[k] })
	out := []*Job{}
	for _, id := range ids {
		if limit > 0 && len(out) >= limit {
			break
		}
		if e, ok := m.live(id); ok {
			c := e.j
			out = append(out, &c)
		}
	}
	return out, nil
}

func (m *MemoryStore) UpdateJob(_ context.Context, now time.Time, id int64, retention time.Duration, fn func(*Job) error) (*Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.live(id)
	if !ok {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	c := e.j
	if err := fn(&c); err != nil {
		return nil, err
	}
	c.ID = id
	e.j = c
	if c.State.Terminal() {
		delete(m.active, id)
		if c.DedupeKey != "" && m.dedupe[c.DedupeKey] == id {
			delete(m.dedupe, c.DedupeKey)
		}
		e.expiresAt = now.Add(retention)
	}
	out := c
	return &out, nil
}

func (m *MemoryStore) ActiveJobs(context.Context) ([]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []int64{}
	for id := range m.active {
		out = append(out, id)
	}
	sort.Slice(out, func(i, k int) bool { return out[i] < out[k] })
	return out, nil
}

func (m *MemoryStore) SetProgress(_ context.Context, now time.Time, jobID int64, p Progress) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(jobID); !ok {
		return fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	if m.progress[jobID] == nil {
		m.progress[jobID] = map[string]Progress{}
	}
	p.UpdatedAt = now
	m.progress[jobID][progressField(p.NodeID, p.Digest)] = p
	return nil
}

func (m *MemoryStore) ListProgress(_ context.Context, jobID int64) ([]Progress, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(jobID); !ok {
		return nil, fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	out := []Progress{}
	for _, p := range m.progress[jobID] {
		out = append(out, p)
	}
	sortProgress(out)
	return out, nil
}

func sortProgress(ps []Progress) {
	sort.Slice(ps, func(i, k int) bool {
		if ps[i].NodeID != ps[k].NodeID {
			return ps[i].NodeID < ps[k].NodeID
		}
		return ps[i].Digest < ps[k].Digest
	})
}

func (m *MemoryStore) AcquireLease(_ context.Context, now time.Time, jobID int64, owner string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[jobID]; ok && l.owner != owner && now.Before(l.expiresAt) {
		return false, nil
	}
	m.leases[jobID] = memLease{owner: owner, expiresAt: now.Add(ttl)}
	return true, nil
}

func (m *MemoryStore) ReleaseLease(_ context.Context, jobID int64, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[jobID]; ok && l.owner == owner {
		delete(m.leases, jobID)
	}
	return nil
}

func (m *MemoryStore) MarkSeen(_ context.Context, now time.Time, key string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key = seenKey(key)
	if exp, ok := m.seen[key]; ok && now.Before(exp) {
		return false, nil
	}
	if len(m.seen) >= m.seenSweep {
		for k, exp := range m.seen {
			if !now.Before(exp) {
				delete(m.seen, k)
			}
		}
		m.seenSweep = max(2*len(m.seen), minSeenSweep)
	}
	m.seen[key] = now.Add(ttl)
	return true, nil
}

func (m *MemoryStore) Ping(context.Context) error { return nil }

func (m *MemoryStore) EnrollNode(_ context.Context, now time.Time, id string, key ed25519.PublicKey, at time.Time, keep time.Duration) (ed25519.PublicKey, error) {
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

func (m *MemoryStore) NodeKey(_ context.Context, id string) (ed25519.PublicKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	p, ok := m.pins[id]
	if !ok || !m.now().Before(p.expiresAt) {
		return nil, ErrNotFound
	}
	return p.key, nil
}

func (m *MemoryStore) ForgetNode(_ context.Context, id string) error {
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
