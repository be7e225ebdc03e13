// Package runner runs preheat jobs on one replica: it takes a job's lease,
// moves the job through its states (PENDING → RUNNING → SUCCESS or
// FAILURE; CANCELED from any replica), asks the target nodes' agents for
// its blobs, renews the lease while the job runs, and adopts the unfinished
// jobs of replicas that stopped renewing theirs.
//
// It is built from narrow parts — the job, progress and lease stores, a
// Selector that picks a starting job's nodes, a Dispatcher that reaches
// agents, and a clock — so the state machine and the lease handling are
// tested with a fake clock and a fake dispatcher, without sleeping.
package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
)

// Config is what the runner takes from preheat's configuration.
type Config struct {
	// Owner is this replica's lease owner id.
	Owner string
	// LeaseTTL is how long a lease lasts unrenewed: a stopped replica's
	// jobs are adopted after it.
	LeaseTTL time.Duration
	// JobTimeout bounds a job from its start; Retention is how long a
	// finished job is kept.
	JobTimeout time.Duration
	Retention  time.Duration
	// AgentConcurrency bounds the fetches in flight to one agent, across
	// all jobs of this replica.
	AgentConcurrency int
}

// Selector picks the nodes a starting job goes to.
type Selector interface {
	Select(ctx context.Context, spec nodes.TargetSpec, now time.Time) (nodes.Selection, error)
}

// Dispatcher reaches the agents of a job's target nodes.
type Dispatcher interface {
	// Agent is how this job reaches target t. An error is the fixed
	// message (safe to store and show) every blob of t fails with.
	Agent(ctx context.Context, t jobs.Target) (Agent, error)
}

// Agent fetches blobs into one node's cache.
type Agent interface {
	// Fetch returns once the agent holds the blob, verified. Errors carry
	// fixed messages safe to store and show; an *UnreachableError means
	// the agent could not be reached at all, which fails the node's
	// remaining blobs without asking it again.
	Fetch(ctx context.Context, req nodeapi.FetchRequest) (*nodeapi.FetchResponse, error)
}

// UnreachableError is an agent that could not be reached at all.
type UnreachableError struct{ Msg string }

func (e *UnreachableError) Error() string { return e.Msg }

// Observer is told what the runner did (preheat's metrics).
type Observer interface {
	// JobFinished is called once per job this replica moved to a final
	// state.
	JobFinished(j *jobs.Job)
	// Fetched is one blob fetch: resp nil when it failed.
	Fetched(resp *nodeapi.FetchResponse, took time.Duration)
}

// Deps are the runner's parts.
type Deps struct {
	Jobs       jobs.Store
	Progress   jobs.ProgressStore
	Leases     jobs.LeaseStore
	Selector   Selector
	Dispatcher Dispatcher
	// Clock times leases, the adopt loop and job deadlines, and stamps
	// the job record (nil: the real clock).
	Clock clockwork.Clock
	Log   *logrus.Entry
	// Observer may be nil.
	Observer Observer
}

// Why a job's run ends early (the run context's cause).
var (
	errShutdown  = errors.New("preheat service shutting down")
	errLeaseLost = errors.New("job lease taken over by another replica")
	errCanceled  = errors.New("job canceled")
	errTimeout   = errors.New("job timed out")
)

var errAlreadyFinal = errors.New("job already final")

// FinishedError refuses to cancel a job that already finished.
type FinishedError struct {
	ID    int64
	State jobs.State
}

func (e *FinishedError) Error() string {
	return fmt.Sprintf("job %d already finished (%s)", e.ID, e.State)
}

// Runner runs this replica's jobs.
type Runner struct {
	cfg   Config
	d     Deps
	clock clockwork.Clock
	log   *logrus.Entry
	// base ends every run at Close.
	base context.Context
	stop context.CancelFunc
	runs runs
	wg   sync.WaitGroup
	once sync.Once
}

// runs are the jobs this replica runs now.
type runs struct {
	mu      sync.Mutex
	creds   map[int64]map[string]string // agent headers per job, memory only
	running map[int64]context.CancelCauseFunc
	sems    map[string]chan struct{} // per agent address
}

// New returns a runner that runs nothing until Start or Adopt.
func New(cfg Config, d Deps) *Runner {
	clock := d.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	log := d.Log
	if log == nil {
		log = logrus.NewEntry(logrus.New())
	}
	if d.Observer == nil {
		d.Observer = nopObserver{}
	}
	base, stop := context.WithCancel(context.Background())
	return &Runner{
		cfg: cfg, d: d, clock: clock, log: log, base: base, stop: stop,
		runs: runs{creds: map[int64]map[string]string{}, running: map[int64]context.CancelCauseFunc{}, sems: map[string]chan struct{}{}},
	}
}

type nopObserver struct{}

func (nopObserver) JobFinished(*jobs.Job)                         {}
func (nopObserver) Fetched(*nodeapi.FetchResponse, time.Duration) {}

// Close stops running jobs (leaving them RUNNING for another replica or a
// restart to resume), releases their leases and waits for their runs and
// the adopt loop to end. It is idempotent.
func (r *Runner) Close() {
	r.once.Do(func() {
		r.runs.mu.Lock()
		for _, c := range r.runs.running {
			c(errShutdown)
		}
		r.runs.mu.Unlock()
		r.stop()
		r.wg.Wait()
	})
}

// Start runs a new job here when this replica gets its lease, with the
// agent headers its request carried (held in memory only, only while this
// replica runs the job).
func (r *Runner) Start(ctx context.Context, id int64, headers map[string]string) {
	if len(headers) > 0 {
		r.runs.mu.Lock()
		r.runs.creds[id] = headers
		r.runs.mu.Unlock()
	}
	if ok, err := r.d.Leases.AcquireLease(ctx, r.clock.Now(), id, r.cfg.Owner, r.cfg.LeaseTTL); err == nil && ok {
		r.launch(id)
	} else {
		// Whoever adopts the job has no credentials.
		r.dropCreds(id)
	}
}

// Cancel marks a job CANCELED (a *FinishedError when it already
// finished); the replica running it — this one or another — sees the
// state change and stops dispatching.
func (r *Runner) Cancel(ctx context.Context, id int64) (*jobs.Job, error) {
	j, err := r.d.Jobs.UpdateJob(ctx, r.clock.Now(), id, r.cfg.Retention, func(j *jobs.Job) error {
		if j.State.Terminal() {
			return &FinishedError{ID: id, State: j.State}
		}
		now := r.clock.Now().UTC()
		j.State, j.Error, j.UpdatedAt, j.FinishedAt = jobs.StateCanceled, "canceled by request", now, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	r.d.Observer.JobFinished(j)
	r.runs.mu.Lock()
	if c := r.runs.running[id]; c != nil {
		c(errCanceled)
	}
	delete(r.runs.creds, id)
	r.runs.mu.Unlock()
	return j, nil
}

// HoldsCredentials reports whether this replica holds pull credentials
// for job id (only while it runs the job).
func (r *Runner) HoldsCredentials(id int64) bool {
	r.runs.mu.Lock()
	defer r.runs.mu.Unlock()
	_, ok := r.runs.creds[id]
	return ok
}

func (r *Runner) dropCreds(id int64) {
	r.runs.mu.Lock()
	delete(r.runs.creds, id)
	r.runs.mu.Unlock()
}

// launch runs the job in the background; the caller holds its lease.
func (r *Runner) launch(id int64) {
	r.runs.mu.Lock()
	if _, ok := r.runs.running[id]; ok {
		r.runs.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancelCause(r.base)
	r.runs.running[id] = cancel
	r.runs.mu.Unlock()
	r.wg.Go(func() {
		defer func() {
			// The run ended (finished, canceled, lease lost, shutdown):
			// its credentials end with it, whatever the job's state.
			r.runs.mu.Lock()
			delete(r.runs.running, id)
			delete(r.runs.creds, id)
			r.runs.mu.Unlock()
			cancel(nil)
			// Background ctx: the lease must be released even on shutdown,
			// so another replica can resume without waiting for the TTL.
			rctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			_ = r.d.Leases.ReleaseLease(rctx, id, r.cfg.Owner)
		}()
		r.run(ctx, cancel, id)
	})
}

// Adopt starts the loop that adopts unfinished jobs whose owner stopped
// renewing its lease (a crashed replica, or this one restarted), until
// Close.
func (r *Runner) Adopt() {
	r.wg.Go(func() {
		tick := r.clock.NewTicker(max(r.cfg.LeaseTTL/2, 100*time.Millisecond))
		defer tick.Stop()
		for {
			r.adoptOnce()
			select {
			case <-r.base.Done():
				return
			case <-tick.Chan():
			}
		}
	})
}

func (r *Runner) adoptOnce() {
	ctx := r.base
	ids, err := r.d.Jobs.ActiveJobs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			r.log.WithError(err).Warn("resume scan failed")
		}
		return
	}
	for _, id := range ids {
		r.runs.mu.Lock()
		_, mine := r.runs.running[id]
		r.runs.mu.Unlock()
		if mine {
			continue
		}
		ok, err := r.d.Leases.AcquireLease(ctx, r.clock.Now(), id, r.cfg.Owner, r.cfg.LeaseTTL)
		if err != nil || !ok {
			continue
		}
		r.log.WithField("job", id).Info("adopting unfinished preheat job")
		r.launch(id)
	}
}

// renewEvery is how often a running job's lease is renewed and its state
// checked for a cancel by another replica.
func (r *Runner) renewEvery() time.Duration {
	return min(max(r.cfg.LeaseTTL/3, 50*time.Millisecond), time.Second)
}

// watch renews the lease and notices cancellation by any replica.
func (r *Runner) watch(ctx context.Context, cancel context.CancelCauseFunc, id int64) {
	t := r.clock.NewTicker(r.renewEvery())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.Chan():
		}
		ok, err := r.d.Leases.AcquireLease(ctx, r.clock.Now(), id, r.cfg.Owner, r.cfg.LeaseTTL)
		if err == nil && !ok {
			cancel(errLeaseLost)
			return
		}
		j, err := r.d.Jobs.GetJob(ctx, id)
		if errors.Is(err, jobs.ErrNotFound) || (err == nil && j.State.Terminal()) {
			cancel(errCanceled)
			return
		}
	}
}

// finish records the job's final state unless another replica (or a
// cancel) recorded one first.
func (r *Runner) finish(id int64, state jobs.State, msg string) {
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	j, err := r.d.Jobs.UpdateJob(ctx, r.clock.Now(), id, r.cfg.Retention, func(j *jobs.Job) error {
		if j.State.Terminal() {
			return errAlreadyFinal
		}
		now := r.clock.Now().UTC()
		j.State, j.Error, j.UpdatedAt, j.FinishedAt = state, msg, now, now
		return nil
	})
	r.dropCreds(id)
	if err != nil {
		if !errors.Is(err, errAlreadyFinal) {
			r.log.WithError(err).WithField("job", id).Error("cannot record job result")
		}
		return
	}
	r.d.Observer.JobFinished(j)
	r.log.WithFields(logrus.Fields{"job": id, "state": state, "error": msg}).Info("preheat job finished")
}

// run is one job's run on this replica, from its claim to its final state
// (or to leaving it to another replica).
func (r *Runner) run(ctx context.Context, cancel context.CancelCauseFunc, id int64) {
	j, err := r.d.Jobs.GetJob(ctx, id)
	if err != nil || j.State.Terminal() {
		return
	}
	r.runs.mu.Lock()
	headers, haveCreds := r.runs.creds[id]
	r.runs.mu.Unlock()
	if j.NeedsCreds && !haveCreds {
		r.finish(id, jobs.StateFailure, "job needs pull credentials that were held only in memory by the replica that accepted it ("+
			j.Owner+"), which stopped; credentials are never stored, so resubmit the job")
		return
	}
	if j, err = r.claim(ctx, j); err != nil {
		return
	}
	if len(j.Targets) == 0 {
		if len(j.Groups) == 0 {
			r.finish(id, jobs.StateFailure, "no target nodes: no node matched when the job started")
		} else {
			r.finish(id, jobs.StateFailure, fmt.Sprintf("no target nodes: no node in groups %v when the job started", j.Groups))
		}
		return
	}
	start := j.StartedAt
	if start.IsZero() {
		start = j.CreatedAt
	}
	ctx, cancelRun := context.WithCancelCause(ctx)
	defer cancelRun(nil)
	// A resumed job may be past its deadline already: then it ends
	// before dispatching anything, as a context deadline would.
	if left := r.clock.Until(start.Add(r.cfg.JobTimeout)); left > 0 {
		deadline := r.clock.AfterFunc(left, func() { cancelRun(errTimeout) })
		defer deadline.Stop()
	} else {
		cancelRun(errTimeout)
	}
	go r.watch(ctx, cancel, id)

	r.dispatch(ctx, j, headers)

	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errShutdown), errors.Is(cause, errLeaseLost):
		r.log.WithField("job", id).WithField("reason", cause).Info("leaving preheat job to another replica")
		return
	case errors.Is(cause, errCanceled):
		return // the canceling replica already recorded CANCELED
	case errors.Is(cause, errTimeout):
		r.finish(id, jobs.StateFailure, fmt.Sprintf("job timed out after %s; %s", r.cfg.JobTimeout, r.failureSummary(id)))
		return
	}
	if summary := r.failureSummary(id); summary == "" {
		r.finish(id, jobs.StateSuccess, "")
	} else {
		r.finish(id, jobs.StateFailure, summary)
	}
}

// claim makes this replica the job's owner: a pending job starts (its
// targets frozen), a running one is resumed. errAlreadyFinal when another
// replica finished it meanwhile.
func (r *Runner) claim(ctx context.Context, j *jobs.Job) (*jobs.Job, error) {
	id := j.ID
	if j.State != jobs.StatePending {
		j, err := r.d.Jobs.UpdateJob(ctx, r.clock.Now(), id, r.cfg.Retention, func(j *jobs.Job) error {
			if j.State.Terminal() {
				return errAlreadyFinal
			}
			j.Owner, j.UpdatedAt = r.cfg.Owner, r.clock.Now().UTC()
			return nil
		})
		if err == nil {
			r.log.WithField("job", id).Info("resuming preheat job")
		}
		return j, err
	}
	sel, err := r.d.Selector.Select(ctx, targetSpec(j), r.clock.Now())
	if err != nil {
		r.log.WithField("job", id).WithError(err).Warn("cannot select targets; will retry")
		return nil, err
	}
	return r.d.Jobs.UpdateJob(ctx, r.clock.Now(), id, r.cfg.Retention, func(j *jobs.Job) error {
		if j.State != jobs.StatePending {
			return errAlreadyFinal
		}
		now := r.clock.Now().UTC()
		j.State, j.StartedAt, j.UpdatedAt, j.Targets, j.Owner = jobs.StateRunning, now, now, sel.Targets, r.cfg.Owner
		j.EmptyGroups = sel.EmptyGroups
		return nil
	})
}

// targetSpec is the target a stored job asked for; its id seeds which
// nodes a count or percentage picks, and a Harbor single_seed_peer job
// (source suffix ":single") keeps one node per group.
func targetSpec(j *jobs.Job) nodes.TargetSpec {
	return nodes.TargetSpec{Groups: j.Groups, Nodes: j.Nodes, Count: j.Count, Percentage: j.Percentage,
		OnePerGroup: strings.HasSuffix(j.Source, ":single"), Seed: j.ID}
}
