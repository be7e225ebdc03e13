// Package jobs is what a preheat job is: its record, its states, the
// progress of each blob on each node, and the stores that keep them and
// decide which replica runs a job. It depends on nothing else of preheat.
package jobs

import (
	"context"
	"errors"
	"time"
)

// State is the lifecycle state of a preheat job.
type State string

const (
	StatePending  State = "PENDING"
	StateRunning  State = "RUNNING"
	StateSuccess  State = "SUCCESS"
	StateFailure  State = "FAILURE"
	StateCanceled State = "CANCELED"
)

// Terminal reports whether no further transition can happen.
func (s State) Terminal() bool {
	return s == StateSuccess || s == StateFailure || s == StateCanceled
}

// ErrNotFound is returned for unknown (or expired) jobs.
var ErrNotFound = errors.New("not found")

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

// Job is the persisted job record and the jobs API's wire record.
// Credentials are deliberately absent: they live only in the memory of
// the replica that accepted the request.
//
// Its blocks are embedded without a JSON name, so their fields are
// promoted (j.Repository) and marshal flat, in field order, exactly as
// when they were the Job's own (testdata/job.golden.json): no two blocks
// may have a field of the same name, which JSON would silently drop.
type Job struct {
	// ID must stay the first field: the Redis store allocates it atomically
	// and splices it into the JSON it was given (see createScript).
	ID    int64  `json:"id"`
	State State  `json:"state"`
	Error string `json:"error,omitempty"`
	Artifact
	Targeting
	// ClusterIDs are the Harbor scheduler cluster ids the job was asked
	// for, so that each gets its results[] entry.
	ClusterIDs []int    `json:"clusterIds,omitempty"`
	Blobs      []Blob   `json:"blobs"`
	Targets    []Target `json:"targets,omitempty"`
	Bookkeeping
	Times
}

// Times are a job's milestones.
type Times struct {
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
	StartedAt  time.Time `json:"startedAt,omitzero"`
	FinishedAt time.Time `json:"finishedAt,omitzero"`
}

// Artifact is the image a job preheats: as asked, and as resolved.
type Artifact struct {
	Image      string   `json:"image"`
	Registry   string   `json:"registry"`
	Repository string   `json:"repository"`
	Reference  string   `json:"reference"`
	Digest     string   `json:"digest,omitempty"`
	Platforms  []string `json:"platforms,omitempty"`
}

// Targeting is which nodes a job asked for (nodes.TargetSpec) and which
// of its groups had none.
type Targeting struct {
	Groups []string `json:"groups,omitempty"`
	// Nodes, Count and Percentage narrow the groups' nodes.
	Nodes      []string `json:"nodes,omitempty"`
	Count      int      `json:"count,omitempty"`
	Percentage int      `json:"percentage,omitempty"`
	// EmptyGroups are requested groups that had no node when the job
	// started; each is a failure of the job.
	EmptyGroups []string `json:"emptyGroups,omitempty"`
}

// Bookkeeping is what the service keeps about a job to run it.
type Bookkeeping struct {
	Source string `json:"source,omitempty"` // api, distribution, harbor, dragonfly, kraken
	// NeedsCreds: the job's registry wanted credentials, which only the
	// accepting replica holds.
	NeedsCreds bool `json:"needsCredentials,omitempty"`
	// Owner is the replica running the job.
	Owner string `json:"owner,omitempty"`
	// DedupeKey identifies the request: an identical one while the job is
	// unfinished gets this job.
	DedupeKey string `json:"dedupeKey,omitempty"`
}

// Progress is the state of one blob on one node.
type Progress struct {
	NodeID            string    `json:"nodeId"`
	Digest            string    `json:"digest"`
	Size              int64     `json:"size"`
	State             State     `json:"state"`
	Error             string    `json:"error,omitempty"`
	Source            string    `json:"source,omitempty"`
	BytesFromPeers    int64     `json:"bytesFromPeers"`
	BytesFromRegistry int64     `json:"bytesFromRegistry"`
	UpdatedAt         time.Time `json:"updatedAt"`
}

// Store keeps job records.
type Store interface {
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
