package preheat

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/nodes"
)

// launch runs the job in the background; the caller holds its lease.
func (s *Service) launch(id int64) {
	s.runs.mu.Lock()
	if _, ok := s.runs.running[id]; ok {
		s.runs.mu.Unlock()
		return
	}
	ctx, cancel := context.WithCancelCause(s.life.baseCtx)
	s.runs.running[id] = cancel
	s.runs.mu.Unlock()
	s.runs.wg.Add(1)
	go func() {
		defer s.runs.wg.Done()
		defer func() {
			// The run ended (finished, canceled, lease lost, shutdown):
			// its credentials end with it, whatever the job's state.
			s.runs.mu.Lock()
			delete(s.runs.running, id)
			delete(s.runs.creds, id)
			s.runs.mu.Unlock()
			cancel(nil)
			// Background ctx: the lease must be released even on shutdown,
			// so another replica can resume without waiting for the TTL.
			rctx, c := context.WithTimeout(context.Background(), 2*time.Second)
			defer c()
			_ = s.store.ReleaseLease(rctx, id, s.id)
		}()
		s.runJob(ctx, cancel, id)
	}()
}

// resumeLoop adopts unfinished jobs whose owner stopped renewing its lease
// (crashed replica, or this replica restarted).
func (s *Service) resumeLoop() {
	tick := time.NewTicker(max(s.cfg.LeaseTTL/2, 100*time.Millisecond))
	defer tick.Stop()
	for {
		s.resumeOnce()
		select {
		case <-s.life.baseCtx.Done():
			return
		case <-tick.C:
		}
	}
}

func (s *Service) resumeOnce() {
	ctx := s.life.baseCtx
	ids, err := s.store.ActiveJobs(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.log.WithError(err).Warn("resume scan failed")
		}
		return
	}
	for _, id := range ids {
		s.runs.mu.Lock()
		_, mine := s.runs.running[id]
		s.runs.mu.Unlock()
		if mine {
			continue
		}
		ok, err := s.store.AcquireLease(ctx, s.now(), id, s.id, s.cfg.LeaseTTL)
		if err != nil || !ok {
			continue
		}
		s.log.WithField("job", id).Info("adopting unfinished preheat job")
		s.launch(id)
	}
}

// watch renews the lease and notices cancellation by any replica.
func (s *Service) watch(ctx context.Context, cancel context.CancelCauseFunc, id int64) {
	iv := min(max(s.cfg.LeaseTTL/3, 50*time.Millisecond), time.Second)
	t := time.NewTicker(iv)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		ok, err := s.store.AcquireLease(ctx, s.now(), id, s.id, s.cfg.LeaseTTL)
		if err == nil && !ok {
			cancel(errLeaseLost)
			return
		}
		j, err := s.store.GetJob(ctx, id)
		if errors.Is(err, ErrNotFound) || (err == nil && j.State.Terminal()) {
			cancel(errCanceled)
			return
		}
	}
}

func (s *Service) finish(id int64, state JobState, msg string) {
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	j, err := s.store.UpdateJob(ctx, s.now(), id, s.cfg.Retention, func(j *Job) error {
		if j.State.Terminal() {
			return errAlreadyFinal
		}
		now := s.now().UTC()
		j.State, j.Error, j.UpdatedAt, j.FinishedAt = state, msg, now, now
		return nil
	})
	s.dropCreds(id)
	if err != nil {
		if !errors.Is(err, errAlreadyFinal) {
			s.log.WithError(err).WithField("job", id).Error("cannot record job result")
		}
		return
	}
	s.metrics.finished(j)
	s.log.WithFields(logrus.Fields{"job": id, "state": state, "error": msg}).Info("preheat job finished")
}

var errAlreadyFinal = errors.New("job already final")

func (s *Service) runJob(ctx context.Context, cancel context.CancelCauseFunc, id int64) {
	log := s.log.WithField("job", id)
	j, err := s.store.GetJob(ctx, id)
	if err != nil || j.State.Terminal() {
		return
	}
	s.runs.mu.Lock()
	headers, haveCreds := s.runs.creds[id]
	s.runs.mu.Unlock()
	if j.NeedsCreds && !haveCreds {
		s.finish(id, StateFailure, "job needs pull credentials that were held only in memory by the replica that accepted it ("+
			j.Owner+"), which stopped; credentials are never stored, so resubmit the job")
		return
	}
	if j, err = s.claim(ctx, j); err != nil {
		return
	}
	if len(j.Targets) == 0 {
		if len(j.Groups) == 0 {
			s.finish(id, StateFailure, "no target nodes: no node matched when the job started")
		} else {
			s.finish(id, StateFailure, fmt.Sprintf("no target nodes: no node in groups %v when the job started", j.Groups))
		}
		return
	}
	start := j.StartedAt
	if start.IsZero() {
		start = j.CreatedAt
	}
	ctx, cancelT := context.WithDeadlineCause(ctx, start.Add(s.cfg.JobTimeout), errTimeout)
	defer cancelT()
	go s.watch(ctx, cancel, id)

	s.dispatch(ctx, j, headers)

	switch cause := context.Cause(ctx); {
	case errors.Is(cause, errShutdown), errors.Is(cause, errLeaseLost):
		log.WithField("reason", cause).Info("leaving preheat job to another replica")
		return
	case errors.Is(cause, errCanceled):
		return // the canceling replica already recorded CANCELED
	case errors.Is(cause, errTimeout):
		s.finish(id, StateFailure, fmt.Sprintf("job timed out after %s; %s", s.cfg.JobTimeout, s.failureSummary(id)))
		return
	}
	summary := s.failureSummary(id)
	if summary == "" {
		s.finish(id, StateSuccess, "")
	} else {
		s.finish(id, StateFailure, summary)
	}
}

// claim makes this replica the job's owner: a pending job starts
// (its targets frozen), a running one is resumed. errAlreadyFinal when
// another replica finished it meanwhile.
func (s *Service) claim(ctx context.Context, j *Job) (*Job, error) {
	id := j.ID
	if j.State != StatePending {
		j, err := s.store.UpdateJob(ctx, s.now(), id, s.cfg.Retention, func(j *Job) error {
			if j.State.Terminal() {
				return errAlreadyFinal
			}
			j.Owner, j.UpdatedAt = s.id, s.now().UTC()
			return nil
		})
		if err == nil {
			s.log.WithField("job", id).Info("resuming preheat job")
		}
		return j, err
	}
	sel, err := s.selectTargets(ctx, j)
	if err != nil {
		s.log.WithField("job", id).WithError(err).Warn("cannot select targets; will retry")
		return nil, err
	}
	return s.store.UpdateJob(ctx, s.now(), id, s.cfg.Retention, func(j *Job) error {
		if j.State != StatePending {
			return errAlreadyFinal
		}
		now := s.now().UTC()
		j.State, j.StartedAt, j.UpdatedAt, j.Targets, j.Owner = StateRunning, now, now, sel.Targets, s.id
		j.EmptyGroups = sel.EmptyGroups
		return nil
	})
}

// dispatch fetches the job's blobs onto its targets, skipping what an
// earlier owner already finished, until all are done or ctx ends.
func (s *Service) dispatch(ctx context.Context, j *Job, headers map[string]string) {
	done := map[string]bool{}
	if ps, err := s.store.ListProgress(ctx, j.ID); err == nil {
		for _, p := range ps {
			if p.State == StateSuccess {
				done[progressField(p.NodeID, p.Digest)] = true
			}
		}
	}
	ref := ImageRef{Registry: j.Registry, Repository: j.Repository}
	var wg sync.WaitGroup
	for _, t := range j.Targets {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s.runNode(ctx, j, ref, t, headers, done)
		}()
	}
	wg.Wait()
}

// failureSummary lists failed node/blob pairs ("" when all succeeded).
func (s *Service) failureSummary(id int64) string {
	ctx, c := context.WithTimeout(context.Background(), 5*time.Second)
	defer c()
	j, err := s.store.GetJob(ctx, id)
	if err != nil {
		return "cannot read job: " + err.Error()
	}
	ps, err := s.store.ListProgress(ctx, id)
	if err != nil {
		return "cannot read progress: " + err.Error()
	}
	ok := map[string]bool{}
	errs := map[string]string{}
	for _, p := range ps {
		f := progressField(p.NodeID, p.Digest)
		ok[f] = p.State == StateSuccess
		errs[f] = p.Error
	}
	var failed []string
	total := 0
	for _, t := range j.Targets {
		for _, b := range j.Blobs {
			total++
			f := progressField(t.NodeID, b.Digest)
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

// selectTargets freezes the job's targets (see the pure selectTargets).
func (s *Service) selectTargets(ctx context.Context, j *Job) (Selection, error) {
	ns, err := s.store.ListNodes(ctx)
	if err != nil {
		return Selection{}, err
	}
	spec := TargetSpec{Groups: j.Groups, Nodes: j.Nodes, Count: j.Count, Percentage: j.Percentage,
		OnePerGroup: strings.HasSuffix(j.Source, ":single"), Seed: j.ID}
	return nodes.Select(ns, spec, s.now()), nil
}

func (s *Service) sem(addr string) chan struct{} {
	s.runs.mu.Lock()
	defer s.runs.mu.Unlock()
	c, ok := s.runs.sems[addr]
	if !ok {
		c = make(chan struct{}, s.cfg.AgentConcurrency)
		s.runs.sems[addr] = c
	}
	return c
}

// runNode fetches every blob not yet done onto one node. A transport error
// (agent unreachable) fails the node's remaining blobs at once instead of
// paying FetchTimeout per blob.
func (s *Service) runNode(ctx context.Context, j *Job, ref ImageRef, t Target, headers map[string]string, done map[string]bool) {
	set := func(p Progress) {
		if ctx.Err() != nil && !errors.Is(context.Cause(ctx), errTimeout) {
			return // shutdown/cancel: do not record spurious failures
		}
		wctx, c := context.WithTimeout(context.Background(), 5*time.Second)
		defer c()
		if err := s.store.SetProgress(wctx, s.now(), j.ID, p); err != nil && !errors.Is(err, ErrNotFound) {
			s.log.WithError(err).WithField("job", j.ID).Warn("cannot record progress")
		}
	}
	if t.Offline {
		for _, b := range j.Blobs {
			if !done[progressField(t.NodeID, b.Digest)] {
				set(Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: StateFailure, Error: "node offline: no heartbeat within TTL"})
			}
		}
		return
	}
	// The key the node enrolled with: the fetch (and the job's
	// credentials) goes only to a TLS peer holding it.
	key, err := s.store.NodeKey(ctx, t.NodeID)
	if err != nil {
		msg := "node not enrolled (forgotten by an operator); it enrolls again with its next heartbeat"
		if !errors.Is(err, ErrNotFound) {
			msg = "cannot read the node's enrolled key"
			s.log.WithError(err).WithField("node", t.NodeID).Warn("cannot read node key")
		}
		for _, b := range j.Blobs {
			if !done[progressField(t.NodeID, b.Digest)] {
				set(Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: StateFailure, Error: msg})
			}
		}
		return
	}
	var unreachable atomic.Pointer[string]
	sem := s.sem(t.Address)
	var wg sync.WaitGroup
	for _, b := range j.Blobs {
		if done[progressField(t.NodeID, b.Digest)] {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				set(Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: StateFailure, Error: context.Cause(ctx).Error()})
				return
			}
			defer func() { <-sem }()
			if msg := unreachable.Load(); msg != nil {
				set(Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: StateFailure, Error: *msg})
				return
			}
			set(Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: StateRunning})
			start := time.Now()
			resp, transport, err := s.fetch(ctx, t, key, ref, b, headers)
			if err != nil {
				msg := err.Error()
				if transport {
					msg = "agent unreachable: " + msg
					unreachable.CompareAndSwap(nil, &msg)
				}
				s.metrics.fetches.WithLabelValues("failure").Inc()
				set(Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: StateFailure, Error: msg})
				return
			}
			s.metrics.fetches.WithLabelValues("success").Inc()
			s.metrics.bytes.WithLabelValues("peer").Add(float64(resp.BytesFromPeers))
			s.metrics.bytes.WithLabelValues("registry").Add(float64(resp.BytesFromRegistry))
			s.metrics.fetchDur.Observe(time.Since(start).Seconds())
			set(Progress{NodeID: t.NodeID, Digest: b.Digest, Size: b.Size, State: StateSuccess, Source: resp.Source,
				BytesFromPeers: resp.BytesFromPeers, BytesFromRegistry: resp.BytesFromRegistry})
		}()
	}
	wg.Wait()
}

// fetch asks one agent for one blob, at its enrolled address over mutual
// TLS pinned to its enrolled key. transport reports that the agent could
// not be reached at all (as opposed to answering with an error). Error
// messages are fixed per class: what an agent or a registry said is logged
// at debug, never stored in progress or returned to API callers.
func (s *Service) fetch(ctx context.Context, t Target, key ed25519.PublicKey, ref ImageRef, b Blob, headers map[string]string) (*nodeapi.FetchResponse, bool, error) {
	fctx, cancel := context.WithTimeout(ctx, s.cfg.FetchTimeout)
	defer cancel()
	fr, err := s.member.agents.Fetch(fctx, t.Address, key, nodeapi.FetchRequest{Registry: ref.Registry, Repository: ref.Repository, Digest: b.Digest, Size: b.Size, Headers: headers})
	if err == nil {
		if fr.Digest != "" && fr.Digest != b.Digest {
			return nil, false, errors.New("agent reported another digest than the one asked for")
		}
		return fr, false, nil
	}
	log := s.log.WithFields(logrus.Fields{"node": t.NodeID, "digest": b.Digest})
	var se *nodeapi.StatusError
	switch {
	case ctx.Err() != nil:
		return nil, false, context.Cause(ctx)
	case fctx.Err() != nil:
		return nil, false, fmt.Errorf("agent did not answer within %s", s.cfg.FetchTimeout)
	case errors.As(err, &se):
		log.WithFields(logrus.Fields{"status": se.Status, "code": se.Code, "detail": se.Detail}).Debug("agent refused a fetch")
		return nil, false, errors.New(fetchFailure(se))
	case nodeapi.IsPinMismatch(err):
		log.WithError(err).Warn("agent presented another key than the one enrolled; not sending the fetch")
		return nil, true, errors.New("agent at the enrolled address presented another key than the one enrolled")
	case errors.Is(err, nodeapi.ErrUnreachable):
		log.WithError(err).Debug("agent unreachable")
		return nil, true, errors.New("connection failed")
	}
	log.WithError(err).Debug("fetch failed")
	return nil, false, errors.New("agent answered with a malformed response")
}

// fetchFailure is the fixed message for an agent's refusal.
func fetchFailure(se *nodeapi.StatusError) string {
	switch se.Code {
	case nodeapi.CodeInvalid:
		return fmt.Sprintf("agent refused the request as invalid (%d)", se.Status)
	case nodeapi.CodeUpstreamDenied:
		return fmt.Sprintf("registry refused the job's credentials (%d)", se.Status)
	case nodeapi.CodeBlobUnknown:
		return fmt.Sprintf("registry has no such blob (%d)", se.Status)
	case nodeapi.CodeUpstream:
		return fmt.Sprintf("registry answered an error (%d)", se.Status)
	case nodeapi.CodeSizeMismatch:
		return "blob size differs from the manifest's"
	case nodeapi.CodeFetchFailed:
		return fmt.Sprintf("agent could not download the blob (%d)", se.Status)
	case nodeapi.CodeNotConfigured:
		return "the job's registry is not one of the agent's upstreams"
	case nodeapi.CodeTooLarge:
		return "blob larger than the agent's cache"
	}
	switch {
	case se.Status == 401 || se.Status == 403:
		return fmt.Sprintf("agent refused preheat (%d)", se.Status)
	case se.Status >= 500:
		return fmt.Sprintf("agent failed (%d)", se.Status)
	}
	return fmt.Sprintf("agent answered %d", se.Status)
}
