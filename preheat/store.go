package preheat

import (
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"sort"
	"time"

	"github.com/shoalproject/shoal/internal/nodeapi"
)

// JobState is the lifecycle state of a preheat job.
type JobState string

const (
	StatePending  JobState = "PENDING"
	StateRunning  JobState = "RUNNING"
	StateSuccess  JobState = "SUCCESS"
	StateFailure  JobState = "FAILURE"
	StateCanceled JobState = "CANCELED"
)

// Terminal reports whether no further transition can happen.
func (s JobState) Terminal() bool {
	return s == StateSuccess || s == StateFailure || s == StateCanceled
}

// ErrNotFound is returned for unknown (or expired) jobs.
var ErrNotFound = errors.New("not found")

// Enrollment refusals (Store.EnrollNode).
var (
	ErrKeyMismatch = errors.New("node id is enrolled with another key")
	ErrReplay      = errors.New("heartbeat is not newer than the last one accepted")
)

// Node is an agent as it registered through the heartbeat endpoint: its
// last accepted heartbeat (address checked, groups sorted) and what preheat
// adds to it.
type Node struct {
	nodeapi.Heartbeat
	// KeyFingerprint identifies the key the node enrolled with
	// (nodeapi.Fingerprint).
	KeyFingerprint string    `json:"keyFingerprint,omitempty"`
	LastSeen       time.Time `json:"lastSeen"`
	// ExpiresAt is LastSeen + heartbeat TTL: the node is alive before it.
	ExpiresAt time.Time `json:"expiresAt"`
}

// Alive reports whether the node's last heartbeat is still within its TTL.
func (n Node) Alive(now time.Time) bool { return now.Before(n.ExpiresAt) }

// Blob is one content-addressed blob of the image to preheat.
type Blob struct {
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	MediaType string `json:"mediaType,omitempty"`
}

// Target is a node a job dispatches to, frozen when the job starts so a
// resumed job addresses the same nodes.
type Target struct {
	NodeID  string   `json:"nodeId"`
	Address string   `json:"address"`
	Groups  []string `json:"groups"`
	// Offline is set when the node had no live heartbeat at dispatch time.
	Offline bool `json:"offline,omitempty"`
}

// Job is the persisted job record. Credentials are deliberately absent: they
// live only in the memory of the replica that accepted the request.
type Job struct {
	// ID must stay the first field: the Redis store allocates it atomically
	// and splices it into the JSON it was given (see createScript).
	ID         int64    `json:"id"`
	State      JobState `json:"state"`
	Error      string   `json:"error,omitempty"`
	Image      string   `json:"image"`
	Registry   string   `json:"registry"`
	Repository string   `json:"repository"`
	Reference  string   `json:"reference"`
	Digest     string   `json:"digest,omitempty"`
	Platforms  []string `json:"platforms,omitempty"`
	Groups     []string `json:"groups,omitempty"`
	// Nodes, Count and Percentage narrow the groups' nodes (TargetSpec).
	Nodes      []string `json:"nodes,omitempty"`
	Count      int      `json:"count,omitempty"`
	Percentage int      `json:"percentage,omitempty"`
	// EmptyGroups are requested groups that had no node when the job
	// started; each is a failure of the job.
	EmptyGroups []string `json:"emptyGroups,omitempty"`
	// ClusterIDs are the Harbor scheduler cluster ids the job was asked
	// for, so that each gets its results[] entry.
	ClusterIDs []int     `json:"clusterIds,omitempty"`
	Blobs      []Blob    `json:"blobs"`
	Targets    []Target  `json:"targets,omitempty"`
	Source     string    `json:"source,omitempty"` // api, distribution, harbor, dragonfly, kraken
	NeedsCreds bool      `json:"needsCredentials,omitempty"`
	Owner      string    `json:"owner,omitempty"`
	DedupeKey  string    `json:"dedupeKey,omitempty"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Progress is the state of one blob on one node.
type Progress struct {
	NodeID            string    `json:"nodeId"`
	Digest            string    `json:"digest"`
	Size              int64     `json:"size"`
	State             JobState  `json:"state"`
	Error             string    `json:"error,omitempty"`
	Source            string    `json:"source,omitempty"`
	BytesFromPeers    int64     `json:"bytesFromPeers"`
	BytesFromRegistry int64     `json:"bytesFromRegistry"`
	UpdatedAt         time.Time `json:"updatedAt"`
}

// Store holds all shared preheat state. Every replica talks to the same
// Store, so anything a replica needs to resume or show a job lives here.
// Implementations: RedisStore (production, multi-replica) and MemoryStore
// (the embedded `shoal run` mode); both pass preheat/storetest.
//
// Each part is its own interface with its own suite, so a component that
// needs leases depends on LeaseStore, not on all of preheat's state. Every
// method that sets a deadline takes now from the caller, and the deadline
// is now plus the duration; the store drops a record when its own clock
// (Redis's, or MemoryStore's) passes the deadline. A suite checks expiry
// by writing with a now in the past instead of sleeping.
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

// NodeStore keeps the nodes' last heartbeats.
type NodeStore interface {
	// PutNode records a heartbeat received at now; the node counts as
	// alive for ttl and is listed (dead) for a while after.
	PutNode(ctx context.Context, now time.Time, n Node, ttl time.Duration) error
	// ListNodes returns nodes seen within the forget window, dead or alive.
	ListNodes(ctx context.Context) ([]Node, error)
}

// KeyStore pins node ids to the keys they enrolled with.
type KeyStore interface {
	// EnrollNode pins node id to key on first sight and records at as the
	// newest heartbeat accepted from it, atomically. The pin lives for keep
	// after now (far longer than the node record). It fails with
	// ErrKeyMismatch, returning the pinned key, when id is pinned to
	// another key, and with ErrReplay when at is not after the last
	// heartbeat accepted for id.
	EnrollNode(ctx context.Context, now time.Time, id string, key ed25519.PublicKey, at time.Time, keep time.Duration) (pinned ed25519.PublicKey, err error)
	// NodeKey is the key id is pinned to (ErrNotFound when none).
	NodeKey(ctx context.Context, id string) (ed25519.PublicKey, error)
	// ForgetNode drops the pin and the node record, so the node id can
	// enroll again with a new key (ErrNotFound when neither existed).
	ForgetNode(ctx context.Context, id string) error
}

// JobStore keeps job records.
type JobStore interface {
	// CreateJob stores j with a fresh ID unless an unfinished job with the
	// same dedupe key exists, in which case that job is returned and
	// created is false.
	CreateJob(ctx context.Context, j *Job) (job *Job, created bool, err error)
	GetJob(ctx context.Context, id int64) (*Job, error)
	// ListJobs returns up to limit jobs, newest first.
	ListJobs(ctx context.Context, limit int) ([]*Job, error)
	// UpdateJob applies fn to the current record atomically (optimistic
	// retry on Redis). fn may return an error to abort. When the resulting
	// state is terminal the job leaves the active set, its dedupe key is
	// released and job + progress expire retention after now.
	UpdateJob(ctx context.Context, now time.Time, id int64, retention time.Duration, fn func(*Job) error) (*Job, error)
	// ActiveJobs lists the IDs of jobs not yet in a terminal state.
	ActiveJobs(ctx context.Context) ([]int64, error)
}

// ProgressStore keeps each job's per node, per blob state; it lives and
// expires with the job (ErrNotFound for a job that does not exist).
type ProgressStore interface {
	// SetProgress records p as of now, replacing the node's entry for
	// the blob.
	SetProgress(ctx context.Context, now time.Time, jobID int64, p Progress) error
	ListProgress(ctx context.Context, jobID int64) ([]Progress, error)
}

// LeaseStore decides which replica runs a job.
type LeaseStore interface {
	// AcquireLease takes or renews the job's lease for owner until now +
	// ttl; false when another owner holds it.
	AcquireLease(ctx context.Context, now time.Time, jobID int64, owner string, ttl time.Duration) (bool, error)
	ReleaseLease(ctx context.Context, jobID int64, owner string) error
}

// DeliveryStore remembers webhook deliveries, so a redelivery does not
// start a second job.
type DeliveryStore interface {
	// MarkSeen records a delivery id until now + ttl; false when it was
	// seen before and has not expired (duplicate delivery).
	MarkSeen(ctx context.Context, now time.Time, key string, ttl time.Duration) (bool, error)
}

// seenKey is the fixed-size form of a delivery id: ids come from webhook
// senders, and a key sized by the sender would size the store.
func seenKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

func progressField(nodeID, digest string) string { return nodeID + "|" + digest }

func sortNodes(ns []Node) { sort.Slice(ns, func(i, k int) bool { return ns[i].ID < ns[k].ID }) }

func sortIDs(ids []int64) { sort.Slice(ids, func(i, k int) bool { return ids[i] < ids[k] }) }
