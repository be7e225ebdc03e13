package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
)

// The runner's tests run on the memory stores (which pass the stores'
// suites), a fake clock and a fake dispatcher: no agents, no sleeps. Each
// wait below is on an event the runner causes; its timeout only bounds a
// broken run.

const waitLimit = 20 * time.Second

var bg = context.Background()

const (
	d1 = "sha256:1111111111111111111111111111111111111111111111111111111111111111"
	d2 = "sha256:2222222222222222222222222222222222222222222222222222222222222222"
)

// fetchCall is one fetch the fake agents received.
type fetchCall struct {
	node string
	req  nodeapi.FetchRequest
	ctx  context.Context
}

// fakeAgents is the Dispatcher: Agent fails for the nodes in refuse, and
// every fetch is answered by answer (nil: success from a peer).
type fakeAgents struct {
	refuse map[string]error
	answer func(c fetchCall) (*nodeapi.FetchResponse, error)
	calls  chan fetchCall
}

func newFakeAgents() *fakeAgents {
	return &fakeAgents{refuse: map[string]error{}, calls: make(chan fetchCall, 64)}
}

func (f *fakeAgents) Agent(_ context.Context, t jobs.Target) (Agent, error) {
	if err := f.refuse[t.NodeID]; err != nil {
		return nil, err
	}
	return agentFunc(func(ctx context.Context, req nodeapi.FetchRequest) (*nodeapi.FetchResponse, error) {
		if ctx.Err() != nil {
			return nil, context.Cause(ctx) // as a request on an ended context fails
		}
		c := fetchCall{node: t.NodeID, req: req, ctx: ctx}
		f.calls <- c
		if f.answer != nil {
			return f.answer(c)
		}
		return &nodeapi.FetchResponse{Digest: req.Digest, Source: "peer", BytesFromPeers: req.Size}, nil
	}), nil
}

type agentFunc func(ctx context.Context, req nodeapi.FetchRequest) (*nodeapi.FetchResponse, error)

func (f agentFunc) Fetch(ctx context.Context, req nodeapi.FetchRequest) (*nodeapi.FetchResponse, error) {
	return f(ctx, req)
}

// blockUntilDone answers once the fetch's context ends, with its cause.
func blockUntilDone(c fetchCall) (*nodeapi.FetchResponse, error) {
	<-c.ctx.Done()
	return nil, context.Cause(c.ctx)
}

// observer records what the runner reports.
type observer struct {
	finished chan *jobs.Job
	mu       sync.Mutex
	ok, fail int
}

func (o *observer) JobFinished(j *jobs.Job) { o.finished <- j }
func (o *observer) Fetched(resp *nodeapi.FetchResponse, _ time.Duration) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if resp == nil {
		o.fail++
	} else {
		o.ok++
	}
}

// leaseSpy reports each lease acquisition of the runner it wraps.
type leaseSpy struct {
	jobs.LeaseStore
	acquired chan bool
}

func (l *leaseSpy) AcquireLease(ctx context.Context, now time.Time, id int64, owner string, ttl time.Duration) (bool, error) {
	ok, err := l.LeaseStore.AcquireLease(ctx, now, id, owner, ttl)
	l.acquired <- ok
	return ok, err
}

// env is one replica's runner over stores another replica may share.
type env struct {
	t      *testing.T
	clock  *clockwork.FakeClock
	jobs   *jobs.Memory
	nodes  *nodes.Memory
	agents *fakeAgents
	obs    *observer
	leases *leaseSpy
	r      *Runner
	cfg    Config
}

func newEnv(t *testing.T, cfg Config) *env {
	t.Helper()
	clock := clockwork.NewFakeClockAt(time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC))
	e := &env{t: t, clock: clock, jobs: jobs.NewMemory(clock.Now), nodes: nodes.NewMemory(clock.Now), agents: newFakeAgents(),
		obs: &observer{finished: make(chan *jobs.Job, 16)}}
	e.cfg = Config{Owner: "replica-a", LeaseTTL: 3 * time.Second, JobTimeout: time.Minute, Retention: time.Hour, AgentConcurrency: 1}
	if cfg.Owner != "" {
		e.cfg.Owner = cfg.Owner
	}
	if cfg.AgentConcurrency != 0 {
		e.cfg.AgentConcurrency = cfg.AgentConcurrency
	}
	e.leases = &leaseSpy{LeaseStore: e.jobs, acquired: make(chan bool, 256)}
	log := logrus.New()
	log.SetLevel(logrus.WarnLevel)
	e.r = New(e.cfg, Deps{Jobs: e.jobs, Progress: e.jobs, Leases: e.leases, Selector: StoreSelector{Nodes: e.nodes},
		Dispatcher: e.agents, Clock: clock, Log: logrus.NewEntry(log), Observer: e.obs})
	t.Cleanup(e.r.Close)
	return e
}

// node heartbeats a node in groups, alive unless age is past its TTL.
func (e *env) node(id string, age time.Duration, groups ...string) {
	e.t.Helper()
	n := nodes.Node{Heartbeat: nodeapi.Heartbeat{ID: id, Address: "https://" + id + ".test:5003", Groups: groups}}
	if err := e.nodes.PutNode(bg, e.clock.Now().Add(-age), n, 10*time.Second); err != nil {
		e.t.Fatal(err)
	}
}

// job stores a pending job for groups with two blobs.
func (e *env) job(groups []string, mod func(j *jobs.Job)) int64 {
	e.t.Helper()
	j := &jobs.Job{State: jobs.StatePending,
		Artifact:  jobs.Artifact{Image: "registry.test/lib/app:1", Registry: "https://registry.test", Repository: "lib/app"},
		Targeting: jobs.Targeting{Groups: groups}, Blobs: []jobs.Blob{{Digest: d1, Size: 10}, {Digest: d2, Size: 20}},
		Bookkeeping: jobs.Bookkeeping{Source: "api"}, Times: jobs.Times{CreatedAt: e.clock.Now(), UpdatedAt: e.clock.Now()}}
	if mod != nil {
		mod(j)
	}
	got, _, err := e.jobs.CreateJob(bg, j)
	if err != nil {
		e.t.Fatal(err)
	}
	return got.ID
}

// receive is the next value on ch, or the test fails naming what never
// came.
func receive[T any](t *testing.T, ch <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-ch:
		return v
	case <-time.After(waitLimit):
		t.Fatal(what)
		var zero T
		return zero
	}
}

// finished waits for the runner to record a final state.
func (e *env) finished() *jobs.Job {
	e.t.Helper()
	return receive(e.t, e.obs.finished, "no job finished")
}

// fetchStarted waits for a fetch to reach an agent.
func (e *env) fetchStarted() fetchCall {
	e.t.Helper()
	return receive(e.t, e.agents.calls, "no fetch started")
}

// waiters waits until n timers and tickers wait on the fake clock.
func (e *env) waiters(n int) {
	e.t.Helper()
	ctx, cancel := context.WithTimeout(bg, waitLimit)
	defer cancel()
	if err := e.clock.BlockUntilContext(ctx, n); err != nil {
		e.t.Fatalf("%d timers never waited on the clock: %v", n, err)
	}
}

func (e *env) acquired() bool {
	e.t.Helper()
	return receive(e.t, e.leases.acquired, "no lease renewal")
}

func (e *env) progress(id int64) map[string]jobs.Progress {
	e.t.Helper()
	ps, err := e.jobs.ListProgress(bg, id)
	if err != nil {
		e.t.Fatal(err)
	}
	out := map[string]jobs.Progress{}
	for _, p := range ps {
		out[jobs.ProgressKey(p.NodeID, p.Digest)] = p
	}
	return out
}

func errorAnswer(node, digest string, err error) func(c fetchCall) (*nodeapi.FetchResponse, error) {
	return func(c fetchCall) (*nodeapi.FetchResponse, error) {
		if c.node == node && (digest == "" || c.req.Digest == digest) {
			return nil, err
		}
		return &nodeapi.FetchResponse{Digest: c.req.Digest, Source: "registry", BytesFromRegistry: c.req.Size}, nil
	}
}

// A started job runs through its states to the one its fetches decide.
func TestStateMachine(t *testing.T) {
	for _, c := range []struct {
		name    string
		setup   func(e *env)
		groups  []string
		job     func(j *jobs.Job)
		headers map[string]string
		state   jobs.State
		errWant string
		fetches int // fetches the agents received
	}{
		{name: "all fetched", groups: []string{"g"}, state: jobs.StateSuccess, fetches: 4},
		{name: "agent refuses a blob", groups: []string{"g"},
			setup: func(e *env) { e.agents.answer = errorAnswer("n2", d2, errors.New("registry has no such blob (404)")) },
			state: jobs.StateFailure, fetches: 4,
			errWant: "1 of 4 blob fetches failed: n2 sha256:222222222222: registry has no such blob (404)"},
		{name: "unreachable agent fails its other blobs unasked", groups: []string{"g"},
			setup: func(e *env) { e.agents.answer = errorAnswer("n1", "", &UnreachableError{Msg: "connection failed"}) },
			state: jobs.StateFailure, fetches: 3,
			errWant: "2 of 4 blob fetches failed: n1 sha256:111111111111: agent unreachable: connection failed; n1 sha256:222222222222: agent unreachable: connection failed"},
		{name: "offline node", groups: []string{"g"},
			setup: func(e *env) { e.node("n2", time.Minute, "g") },
			state: jobs.StateFailure, fetches: 2,
			errWant: "2 of 4 blob fetches failed: n2 sha256:111111111111: node offline: no heartbeat within TTL"},
		{name: "node not reachable by the dispatcher", groups: []string{"g"},
			setup: func(e *env) { e.agents.refuse["n1"] = errors.New("node not enrolled") },
			state: jobs.StateFailure, fetches: 2,
			errWant: "2 of 4 blob fetches failed: n1 sha256:111111111111: node not enrolled"},
		{name: "no node in the groups", groups: []string{"other"}, state: jobs.StateFailure,
			errWant: "no target nodes: no node in groups [other] when the job started"},
		{name: "a group without nodes fails the job", groups: []string{"g", "empty"}, state: jobs.StateFailure, fetches: 4,
			errWant: "no nodes in groups [empty]"},
		{name: "credentials needed but not held", groups: []string{"g"}, job: func(j *jobs.Job) { j.NeedsCreds, j.Owner = true, "gone" },
			state: jobs.StateFailure, errWant: "held only in memory by the replica that accepted it (gone)"},
		{name: "credentials go to the agents", groups: []string{"g"}, job: func(j *jobs.Job) { j.NeedsCreds = true },
			headers: map[string]string{"Authorization": "Bearer pull"}, state: jobs.StateSuccess, fetches: 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, Config{})
			e.node("n1", 0, "g")
			e.node("n2", 0, "g")
			if c.setup != nil {
				c.setup(e)
			}
			id := e.job(c.groups, c.job)
			e.r.Start(bg, id, c.headers)
			j := e.finished()
			if j.ID != id || j.State != c.state || !strings.Contains(j.Error, c.errWant) || (c.errWant == "" && j.Error != "") {
				t.Fatalf("job %d %s %q, want %s with %q", j.ID, j.State, j.Error, c.state, c.errWant)
			}
			if got := len(e.agents.calls); got != c.fetches {
				t.Errorf("%d fetches, want %d", got, c.fetches)
			}
			for range len(e.agents.calls) {
				if call := <-e.agents.calls; call.req.Headers["Authorization"] != c.headers["Authorization"] {
					t.Errorf("fetch headers %v, want %v", call.req.Headers, c.headers)
				}
			}
			if j.FinishedAt.IsZero() || (j.Owner != e.cfg.Owner && c.job == nil) {
				t.Errorf("finished at %v by %q", j.FinishedAt, j.Owner)
			}
			e.r.Close()
			if e.r.HoldsCredentials(id) {
				t.Error("credentials outlived the run")
			}
			// The lease went with the run: another replica may take it.
			if ok, _ := e.jobs.AcquireLease(bg, e.clock.Now(), id, "replica-b", time.Second); !ok {
				t.Error("lease not released")
			}
		})
	}
}

// A job canceled on this replica stops its fetches, records nothing
// more, and a second cancel is refused.
func TestCancel(t *testing.T) {
	e := newEnv(t, Config{})
	e.node("n1", 0, "g")
	e.agents.answer = blockUntilDone
	id := e.job([]string{"g"}, nil)
	e.r.Start(bg, id, map[string]string{"Authorization": "Bearer x"})
	call := e.fetchStarted()
	j, err := e.r.Cancel(bg, id)
	if err != nil || j.State != jobs.StateCanceled || j.Error != "canceled by request" {
		t.Fatalf("cancel: %+v %v", j, err)
	}
	if got := e.finished(); got.State != jobs.StateCanceled {
		t.Fatalf("observed %s", got.State)
	}
	<-call.ctx.Done()
	if cause := context.Cause(call.ctx); !errors.Is(cause, errCanceled) {
		t.Fatalf("fetch ended by %v", cause)
	}
	if e.r.HoldsCredentials(id) {
		t.Error("credentials kept after cancel")
	}
	var fe *FinishedError
	if _, err := e.r.Cancel(bg, id); !errors.As(err, &fe) || fe.State != jobs.StateCanceled {
		t.Fatalf("second cancel: %v", err)
	}
	e.r.Close()
	// The fetch in flight stays RUNNING, the queued one unrecorded: a
	// cancel is no failure of theirs.
	if ps := e.progress(id); len(ps) != 1 || ps[jobs.ProgressKey("n1", call.req.Digest)].State != jobs.StateRunning {
		t.Errorf("progress after cancel: %+v", ps)
	}
	if got, _ := e.jobs.GetJob(bg, id); got.State != jobs.StateCanceled {
		t.Errorf("stored %s", got.State)
	}
}

// The running replica renews its lease every renewEvery, so it holds the
// job for as long as it runs, well past one LeaseTTL; a cancel recorded
// by another replica is seen at the next renewal.
func TestLeaseRenewalAndRemoteCancel(t *testing.T) {
	e := newEnv(t, Config{})
	e.node("n1", 0, "g")
	e.agents.answer = blockUntilDone
	id := e.job([]string{"g"}, nil)
	e.r.Start(bg, id, nil)
	if !e.acquired() {
		t.Fatal("lease not acquired")
	}
	call := e.fetchStarted()
	e.waiters(2) // the job's deadline and the renewal ticker
	for i := range 10 {
		e.clock.Advance(e.r.renewEvery())
		if !e.acquired() {
			t.Fatalf("renewal %d refused", i)
		}
		if ok, _ := e.jobs.AcquireLease(bg, e.clock.Now(), id, "replica-b", e.cfg.LeaseTTL); ok {
			t.Fatalf("another replica took a renewed lease after %s", time.Duration(i+1)*e.r.renewEvery())
		}
	}
	// Another replica cancels: the store says CANCELED, this one stops.
	if _, err := e.jobs.UpdateJob(bg, e.clock.Now(), id, time.Hour, func(j *jobs.Job) error {
		j.State = jobs.StateCanceled
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	e.clock.Advance(e.r.renewEvery())
	<-call.ctx.Done()
	if cause := context.Cause(call.ctx); !errors.Is(cause, errCanceled) {
		t.Fatalf("fetch ended by %v", cause)
	}
	e.r.Close()
	select {
	case j := <-e.obs.finished:
		t.Fatalf("this replica recorded %s for a job another canceled", j.State)
	default:
	}
}

// A replica whose lease was taken over stops the job without recording a
// result, drops its credentials, and leaves the new owner's lease alone.
func TestLeaseTakeover(t *testing.T) {
	e := newEnv(t, Config{})
	e.node("n1", 0, "g")
	e.agents.answer = blockUntilDone
	id := e.job([]string{"g"}, nil)
	e.r.Start(bg, id, map[string]string{"Authorization": "Bearer x"})
	call := e.fetchStarted()
	e.waiters(2)
	// Replica b, whose clock reads this lease as expired, takes it.
	if ok, _ := e.jobs.AcquireLease(bg, e.clock.Now().Add(e.cfg.LeaseTTL), id, "replica-b", e.cfg.LeaseTTL); !ok {
		t.Fatal("replica-b could not take an expired lease")
	}
	e.clock.Advance(e.r.renewEvery())
	<-call.ctx.Done()
	if cause := context.Cause(call.ctx); !errors.Is(cause, errLeaseLost) {
		t.Fatalf("fetch ended by %v", cause)
	}
	e.r.Close()
	if e.r.HoldsCredentials(id) {
		t.Error("credentials kept after the lease was lost")
	}
	if j, _ := e.jobs.GetJob(bg, id); j.State != jobs.StateRunning || j.Owner != e.cfg.Owner {
		t.Fatalf("job %s owned by %q, want RUNNING left as it was", j.State, j.Owner)
	}
	if ok, _ := e.jobs.AcquireLease(bg, e.clock.Now(), id, "replica-c", e.cfg.LeaseTTL); ok {
		t.Fatal("the old owner released the new owner's lease")
	}
}

// A replica adopts an unfinished job once its owner's lease lapses, and
// fetches only what the owner had not finished.
func TestAdopt(t *testing.T) {
	e := newEnv(t, Config{Owner: "replica-b"})
	e.node("n1", 0, "g")
	e.node("n2", 0, "g")
	id := e.job([]string{"g"}, func(j *jobs.Job) {
		j.State, j.Owner, j.StartedAt = jobs.StateRunning, "replica-a", j.CreatedAt
		j.Targets = []jobs.Target{{NodeID: "n1", Address: "https://n1.test:5003", Groups: []string{"g"}}, {NodeID: "n2", Address: "https://n2.test:5003", Groups: []string{"g"}}}
	})
	if err := e.jobs.SetProgress(bg, e.clock.Now(), id, jobs.Progress{NodeID: "n1", Digest: d1, Size: 10, State: jobs.StateSuccess}); err != nil {
		t.Fatal(err)
	}
	// replica-a's lease is live: b leaves the job alone.
	if ok, _ := e.jobs.AcquireLease(bg, e.clock.Now(), id, "replica-a", e.cfg.LeaseTTL); !ok {
		t.Fatal(ok)
	}
	e.r.Adopt()
	if e.acquired() {
		t.Fatal("adopted a job under another replica's live lease")
	}
	e.waiters(1) // the adopt ticker
	e.clock.Advance(e.cfg.LeaseTTL)
	for !e.acquired() {
		e.clock.Advance(e.cfg.LeaseTTL / 2)
	}
	j := e.finished()
	if j.State != jobs.StateSuccess || j.Owner != "replica-b" {
		t.Fatalf("adopted job %s owned by %q: %s", j.State, j.Owner, j.Error)
	}
	var got []string
	for range len(e.agents.calls) {
		c := <-e.agents.calls
		got = append(got, c.node+" "+c.req.Digest[:8])
	}
	if len(got) != 3 {
		t.Fatalf("fetches %v, want the 3 blobs replica-a had not finished", got)
	}
	for _, g := range got {
		if g == "n1 "+d1[:8] {
			t.Fatalf("refetched what replica-a finished: %v", got)
		}
	}
}

// A job that runs past JobTimeout fails with what is missing; the clock,
// not the wall, decides.
func TestJobTimeout(t *testing.T) {
	e := newEnv(t, Config{AgentConcurrency: 2})
	e.node("n1", 0, "g")
	e.agents.answer = blockUntilDone
	id := e.job([]string{"g"}, nil)
	e.r.Start(bg, id, nil)
	e.fetchStarted()
	e.fetchStarted()
	e.waiters(2)
	e.clock.Advance(e.cfg.JobTimeout)
	j := e.finished()
	want := fmt.Sprintf("job timed out after %s; 2 of 2 blob fetches failed: n1 sha256:111111111111: job timed out; n1 sha256:222222222222: job timed out", e.cfg.JobTimeout)
	if j.State != jobs.StateFailure || j.Error != want {
		t.Fatalf("job %s %q, want FAILURE %q", j.State, j.Error, want)
	}
	e.obs.mu.Lock()
	defer e.obs.mu.Unlock()
	if e.obs.fail != 2 || e.obs.ok != 0 {
		t.Fatalf("observed %d ok, %d failed fetches", e.obs.ok, e.obs.fail)
	}
}

// A job adopted past its deadline fails at once.
func TestAdoptedPastDeadline(t *testing.T) {
	e := newEnv(t, Config{})
	e.node("n1", 0, "g")
	id := e.job([]string{"g"}, func(j *jobs.Job) {
		j.State, j.Owner, j.StartedAt = jobs.StateRunning, "replica-a", j.CreatedAt.Add(-2*time.Minute)
		j.Targets = []jobs.Target{{NodeID: "n1", Address: "https://n1.test:5003", Groups: []string{"g"}}}
	})
	e.r.Adopt()
	j := e.finished()
	if j.ID != id || j.State != jobs.StateFailure || !strings.HasPrefix(j.Error, "job timed out after 1m0s; 2 of 2 blob fetches failed") {
		t.Fatalf("job %s %q", j.State, j.Error)
	}
}
