package jobs

import (
	"context"
	"fmt"
	"sort"
	"sync"
	"time"
)

// Memory is the in-process Store, ProgressStore and LeaseStore (the
// embedded mode's, and the runner tests'). It mirrors the Redis store's
// semantics — dedupe, retention, leases — so both pass the same suites.
type Memory struct {
	// now is the clock records expire by, as Redis's is for the Redis
	// store: writers set deadlines from the now they pass, reads drop what
	// is past its deadline by this clock.
	now func() time.Time

	mu       sync.Mutex
	seq      int64
	jobs     map[int64]*memJob
	dedupe   map[string]int64
	active   map[int64]bool
	progress map[int64]map[string]Progress
	leases   map[int64]memLease
}

type memJob struct {
	j         Job
	expiresAt time.Time // zero while unfinished
}

type memLease struct {
	owner     string
	expiresAt time.Time
}

// NewMemory returns an empty store whose reads expire records by now (nil:
// time.Now).
func NewMemory(now func() time.Time) *Memory {
	if now == nil {
		now = time.Now
	}
	return &Memory{
		now:      now,
		jobs:     map[int64]*memJob{},
		dedupe:   map[string]int64{},
		active:   map[int64]bool{},
		progress: map[int64]map[string]Progress{},
		leases:   map[int64]memLease{},
	}
}

// ProgressKey is the field one node's progress on one blob is stored
// under: one entry per node per blob.
func ProgressKey(nodeID, digest string) string { return nodeID + "|" + digest }

// SortProgress orders progress by node, then blob.
func SortProgress(ps []Progress) {
	sort.Slice(ps, func(i, k int) bool {
		if ps[i].NodeID != ps[k].NodeID {
			return ps[i].NodeID < ps[k].NodeID
		}
		return ps[i].Digest < ps[k].Digest
	})
}

// live returns the job unless it expired; callers hold mu.
func (m *Memory) live(id int64) (*memJob, bool) {
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

func (m *Memory) CreateJob(_ context.Context, j *Job) (*Job, bool, error) {
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

func (m *Memory) GetJob(_ context.Context, id int64) (*Job, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	e, ok := m.live(id)
	if !ok {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	c := e.j
	return &c, nil
}

func (m *Memory) ListJobs(_ context.Context, limit int) ([]*Job, error) {
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

func (m *Memory) UpdateJob(_ context.Context, now time.Time, id int64, retention time.Duration, fn func(*Job) error) (*Job, error) {
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

func (m *Memory) ActiveJobs(context.Context) ([]int64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []int64{}
	for id := range m.active {
		out = append(out, id)
	}
	sort.Slice(out, func(i, k int) bool { return out[i] < out[k] })
	return out, nil
}

func (m *Memory) SetProgress(_ context.Context, now time.Time, jobID int64, p Progress) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(jobID); !ok {
		return fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	if m.progress[jobID] == nil {
		m.progress[jobID] = map[string]Progress{}
	}
	p.UpdatedAt = now
	m.progress[jobID][ProgressKey(p.NodeID, p.Digest)] = p
	return nil
}

func (m *Memory) ListProgress(_ context.Context, jobID int64) ([]Progress, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(jobID); !ok {
		return nil, fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	out := []Progress{}
	for _, p := range m.progress[jobID] {
		out = append(out, p)
	}
	SortProgress(out)
	return out, nil
}

func (m *Memory) AcquireLease(_ context.Context, now time.Time, jobID int64, owner string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[jobID]; ok && l.owner != owner && now.Before(l.expiresAt) {
		return false, nil
	}
	m.leases[jobID] = memLease{owner: owner, expiresAt: now.Add(ttl)}
	return true, nil
}

func (m *Memory) ReleaseLease(_ context.Context, jobID int64, owner string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if l, ok := m.leases[jobID]; ok && l.owner == owner {
		delete(m.leases, jobID)
	}
	return nil
}
