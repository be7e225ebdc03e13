package preheat

import (
	"context"

	"github.com/shoalproject/shoal/preheat/image"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/traffic"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// The types of preheat's state live in the packages that own them; these
// names keep the API of package preheat (cmd/shoal, the tests) as it was.
type (
	JobState      = jobs.State
	Job           = jobs.Job
	Blob          = jobs.Blob
	Target        = jobs.Target
	Progress      = jobs.Progress
	JobStore      = jobs.Store
	ProgressStore = jobs.ProgressStore
	LeaseStore    = jobs.LeaseStore
	Node          = nodes.Node
	NodeStore     = nodes.Store
	KeyStore      = nodes.KeyStore
	TrafficStore  = traffic.Store
	NodeTraffic   = traffic.NodeTraffic
	TrafficPoint  = traffic.Point
	DeliveryStore = webhook.DeliveryStore
	ImageRef      = image.Ref
	Credentials   = image.Credentials
	Resolved      = image.Resolved
	ResolveError  = image.ResolveError
)

const (
	StatePending  = jobs.StatePending
	StateRunning  = jobs.StateRunning
	StateSuccess  = jobs.StateSuccess
	StateFailure  = jobs.StateFailure
	StateCanceled = jobs.StateCanceled
)

var (
	ErrNotFound    = jobs.ErrNotFound
	ErrKeyMismatch = nodes.ErrKeyMismatch
	ErrReplay      = nodes.ErrReplay
)

// Store holds all shared preheat state. Every replica talks to the same
// Store, so anything a replica needs to resume or show a job lives here.
// Implementations: RedisStore (production, multi-replica) and MemoryStore
// (the embedded `shoal run` mode); both pass preheat/storetest.
//
// Each part is its own interface with its own suite, so a component that
// needs leases depends on LeaseStore, not on all of preheat's state. Every
// method that sets a deadline takes now from the caller, and the deadline
// is now plus the duration; the store drops the record once the deadline
// has passed (RedisStore hands Redis the time left as a TTL, so skew
// between Redis and a replica does not matter). A suite checks expiry by
// writing with a now in the past instead of sleeping.
type Store interface {
	NodeStore
	KeyStore
	JobStore
	ProgressStore
	LeaseStore
	DeliveryStore
	TrafficStore
	Ping(ctx context.Context) error
}

func progressField(nodeID, digest string) string { return jobs.ProgressKey(nodeID, digest) }
