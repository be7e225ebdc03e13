package preheat

import (
	"context"
	"time"

	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/traffic"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// MemoryStore is the single-process Store for the embedded mode: each
// part's memory store (each passes its part's suite), composed as
// RedisStore composes the parts' Redis stores, so both run the same
// suites; jobs do not survive a restart of the process.
type MemoryStore struct {
	*memTraffic
	*memJobs
	*memNodes
	*memDeliveries

	// now is the clock the parts expire records by, as Redis's is for
	// RedisStore: writers set deadlines from the now they pass, reads drop
	// what is past its deadline by this clock.
	now func() time.Time
}

// NewMemoryStore returns an empty store. Nodes are forgotten
// nodes.ForgetFactor x their TTL after their last heartbeat (they show as
// dead until then).
func NewMemoryStore() *MemoryStore {
	m := &MemoryStore{memTraffic: traffic.NewMemory(), memDeliveries: webhook.NewMemory(), now: time.Now}
	// The parts read the store's clock, which a test may set after this.
	clock := func() time.Time { return m.now() }
	m.memJobs, m.memNodes = jobs.NewMemory(clock), nodes.NewMemory(clock)
	return m
}

// Names for the embedded parts (each package calls its store Memory).
type (
	memTraffic    = traffic.Memory
	memJobs       = jobs.Memory
	memNodes      = nodes.Memory
	memDeliveries = webhook.Memory
)

func (m *MemoryStore) Ping(context.Context) error { return nil }
