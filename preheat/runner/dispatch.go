package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/jobs"
)

// dispatch fetches the job's blobs onto its targets, skipping what an
// earlier owner already finished, until all are done or ctx ends.
func (r *Runner) dispatch(ctx context.Context, j *jobs.Job, headers map[string]string) {
	done := map[string]bool{}
	if ps, err := r.d.Progress.ListProgress(ctx, j.ID); err == nil {
		for _, p := range ps {
			if p.State == jobs.StateSuccess {
				done[jobs.ProgressKey(p.NodeID, p.Digest)] = true
			}
		}
	}
	var wg sync.WaitGroup
	for _, t := range j.Targets {
		wg.Go(func() { r.runNode(ctx, j, t, headers, done) })
	}
	wg.Wait()
}

// runNode fetches every blob not yet done onto one node. An unreachable
// agent fails the node's remaining blobs at once instead of paying the
// fetch timeout per blob.
func (r *Runner) runNode(ctx context.Context, j *jobs.Job, t jobs.Target, headers map[string]string, done map[string]bool) {
	set := func(p jobs.Progress) {
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errTimeout) {
			return // shutdown/cancel: do not record spurious failures
		}
		wctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		if err := r.d.Progress.SetProgress(wctx, r.clock.Now(), j.ID, p); err != nil && !errors.Is(err, jobs.ErrNotFound) {
			r.log.WithError(err).WithField("job", j.ID).Warn("cannot record progress")
		}
	}
	failAll := func(msg string) {
		for _, b := range j.Blobs {
			if !done[jobs.ProgressKey(t.NodeID, b.Digest)] {
				set(jobs.Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: jobs.StateFailure, Error: msg})
			}
		}
	}
	if t.Offline {
		failAll("node offline: no heartbeat within TTL")
		return
	}
	agent, err := r.d.Dispatcher.Agent(ctx, t)
	if err != nil {
		failAll(err.Error())
		return
	}
	var unreachable atomic.Pointer[string]
	sem := r.sem(t.Address)
	var wg sync.WaitGroup
	for _, b := range j.Blobs {
		if done[jobs.ProgressKey(t.NodeID, b.Digest)] {
			continue
		}
		wg.Go(func() {
			failed := func(msg string) {
				set(jobs.Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: jobs.StateFailure, Error: msg})
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				failed(context.Cause(ctx).Error())
				return
			}
			defer func() { <-sem }()
			if msg := unreachable.Load(); msg != nil {
				failed(*msg)
				return
			}
			set(jobs.Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: jobs.StateRunning})
			start := r.clock.Now()
			resp, err := agent.Fetch(ctx, nodeapi.FetchRequest{Registry: j.Registry, Repository: j.Repository, Digest: b.Digest, Size: b.Size, Headers: headers})
			if err != nil {
				msg := err.Error()
				if ue := (*UnreachableError)(nil); errors.As(err, &ue) {
					msg = "agent unreachable: " + msg
					unreachable.CompareAndSwap(nil, &msg)
				}
				r.d.Observer.Fetched(nil, r.clock.Since(start))
				failed(msg)
				return
			}
			r.d.Observer.Fetched(resp, r.clock.Since(start))
			set(jobs.Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: jobs.StateSuccess, Source: resp.Source,
				BytesFromPeers: resp.BytesFromPeers, BytesFromRegistry: resp.BytesFromRegistry})
		})
	}
	wg.Wait()
}

// sem bounds the fetches in flight to one agent address across all jobs.
func (r *Runner) sem(addr string) chan struct{} {
	r.runs.mu.Lock()
	defer r.runs.mu.Unlock()
	c, ok := r.runs.sems[addr]
	if !ok {
		c = make(chan struct{}, r.cfg.AgentConcurrency)
		r.runs.sems[addr] = c
	}
	return c
}

// failureSummary lists failed node/blob pairs ("" when all succeeded).
func (r *Runner) failureSummary(id int64) string {
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	j, err := r.d.Jobs.GetJob(ctx, id)
	if err != nil {
		return "cannot read job: " + err.Error()
	}
	ps, err := r.d.Progress.ListProgress(ctx, id)
	if err != nil {
		return "cannot read progress: " + err.Error()
	}
	return summarize(j, ps)
}

// summarize is failureSummary's text from the job and its progress.
func summarize(j *jobs.Job, ps []jobs.Progress) string {
	ok := map[string]bool{}
	errs := map[string]string{}
	for _, p := range ps {
		f := jobs.ProgressKey(p.NodeID, p.Digest)
		ok[f] = p.State == jobs.StateSuccess
		errs[f] = p.Error
	}
	var failed []string
	total := 0
	for _, t := range j.Targets {
		for _, b := range j.Blobs {
			total++
			f := jobs.ProgressKey(t.NodeID, b.Digest)
			if !ok[f] {
				msg := errs[f]
				if msg == "" {
					msg = "not fetched"
				}
				failed = append(failed, fmt.Sprintf("%s %s: %s", t.NodeID, shortDigest(b.Digest), msg))
			}
		}
	}
	empty := ""
	if len(j.EmptyGroups) > 0 {
		empty = fmt.Sprintf("no nodes in groups %v", j.EmptyGroups)
	}
	if len(failed) == 0 {
		return empty
	}
	if empty != "" {
		empty += "; "
	}
	n, more := len(failed), ""
	if len(failed) > 5 {
		more = fmt.Sprintf("; and %d more", len(failed)-5)
		failed = failed[:5]
	}
	return fmt.Sprintf("%s%d of %d blob fetches failed: %s%s", empty, n, total, strings.Join(failed, "; "), more)
}

func shortDigest(d string) string {
	if len(d) > 19 {
		return d[:19]
	}
	return d
}
