package preheat

import (
	"context"
	"sync"
	"time"

	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/traffic"
)

// MemoryStore is the single-process Store for the embedded mode: each
// part's memory store (each passes its part's suite) and the webhook
// delivery ids. It mirrors RedisStore's semantics (TTLs, dedupe, leases,
// retention) so both run the same test suite; jobs do not survive a
// restart of the process.
type MemoryStore struct {
	*memTraffic
	*memJobs
	*memNodes

	// now is the clock the parts expire records by, as Redis's is for
	// RedisStore: writers set deadlines from the now they pass, reads drop
	// what is past its deadline by this clock.
	now func() time.Time

	mu   sync.Mutex
	seen map[string]time.Time
	// seenSweep is the size of seen at which expired entries are next
	// dropped: twice what survived the last sweep, so the sweep costs
	// O(1) per MarkSeen and seen stays within twice the live ids.
	seenSweep int
}

// NewMemoryStore returns an empty store. Nodes are forgotten
// nodes.ForgetFactor x their TTL after their last heartbeat (they show as
// dead until then).
func NewMemoryStore() *MemoryStore {
	m := &MemoryStore{memTraffic: traffic.NewMemory(), now: time.Now, seen: map[string]time.Time{}, seenSweep: minSeenSweep}
	// The parts read the store's clock, which a test may set after this.
	clock := func() time.Time { return m.now() }
	m.memJobs, m.memNodes = jobs.NewMemory(clock), nodes.NewMemory(clock)
	return m
}

// Names for the embedded parts (each package calls its store Memory).
type (
	memTraffic = traffic.Memory
	memJobs    = jobs.Memory
	memNodes   = nodes.Memory
)

// minSeenSweep is the smallest size of the delivery id set worth sweeping.
const minSeenSweep = 1024

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
