// Package preheat distributes an image's blobs to chosen groups of nodes
// before anyone pulls it: triggered by the API, by registry push
// notifications, or by Harbor acting through its P2P preheat provider
// interface (Dragonfly and Kraken flavours).
//
// # Dispatch design: HTTP push to agents
//
// For every live node of the target groups the job runner POSTs
// <node.address>/_shoal/v1/fetch once per blob (mutual TLS pinned to the
// key the node enrolled with); the agent answers when the
// blob is cached and verified (or with an error). We chose push over a
// queue (e.g. a Redis Stream per group) because:
//   - agents need no Redis credentials or connectivity — only the preheat
//     service does, which keeps the blast radius of the shared store small;
//   - the result is synchronous and per blob, so per-node per-blob progress
//     is exact and an offline or broken agent shows up as a failure within
//     FetchTimeout instead of a message nobody acknowledges;
//   - concurrency per agent is bounded centrally (AgentConcurrency), across
//     all jobs of this replica.
//
// # State and replicas
//
// Jobs, progress, nodes, dedupe keys and leases live in a Store (Redis in
// production; in memory for the embedded mode). The replica that accepts a
// job takes a lease on it and renews it while running; if it dies, another
// replica takes the lease over after LeaseTTL and resumes the job, skipping
// blobs already reported SUCCESS (agents answer "cache" for those anyway).
//
// # Pull credentials
//
// Credentials and headers (e.g. Harbor's pull JWT) are held only in the
// memory of the replica that accepted the job and are never logged or
// written to the Store. A job that needed credentials and is resumed by a
// replica that does not hold them (owner crashed/restarted) fails with an
// explicit error asking to resubmit; jobs without credentials resume
// transparently. This trades resumability of authenticated jobs for never
// having secrets at rest in Redis.
package preheat

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jonboulle/clockwork"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/image"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/runner"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// Service is one preheat replica: the wiring of its parts and the HTTP
// handlers over them.
type Service struct {
	cfg     Config
	store   Store
	now     func() time.Time
	log     *logrus.Entry
	id      string
	metrics *metricSet
	// enroll accepts heartbeats: verification and enrollment.
	enroll *nodes.Enroller
	up     upstreams
	admit  *admission
	// listenAddr is the address Serve's listener is bound to: whether the
	// console may run without tokens depends on it.
	listenAddr atomic.Pointer[string]
	runner     *runner.Runner
	life       lifecycle
}

// member makes the replica a cluster member: heartbeats are verified with
// the authority (nodes.Enroller), agents called over mutual TLS as
// identity, pinned to each node's enrolled key (runner.Agents).
type member struct {
	authority *cluster.Authority
	identity  *cluster.Identity
	agents    *nodeapi.Client
}

// upstreams are what the replica reads swarms from, and what turns a
// push into preheats.
type upstreams struct {
	// swarms reads the tracker's swarm listing; nil when no tracker is
	// configured.
	swarms *swarmClient
	// push translates push notifications, with cfg.Policies compiled.
	push webhook.Translator
}

// lifecycle is what Serve and Close start and stop.
type lifecycle struct {
	// streamsDone closes when the HTTP server shuts down, ending console
	// event streams, which would otherwise hold Shutdown to its timeout.
	streamsDone chan struct{}
	// closeStore releases a store New built itself (a no-op for
	// Deps.Store, which its owner closes).
	closeStore func() error
	closeOnce  sync.Once
	closeErr   error
}

// Deps are what the process provides to a replica.
type Deps struct {
	// Log is the replica's logger (nil: cfg.Log.NewLogger("preheat")).
	Log *logrus.Entry
	// ProcessMetrics are served on /metrics next to the replica's own
	// (nil: only the replica's).
	ProcessMetrics prometheus.Gatherer
	// Store holds the shared state (nil: Redis when cfg.Redis has addrs,
	// else in memory). A Store given here is not closed by Close.
	Store Store
	// Clock is the replica's clock: job and node timestamps, the
	// deadlines the store expires records by, leases and job timeouts
	// (nil: the real clock).
	Clock clockwork.Clock
}

// New builds a replica from cfg. It listens nowhere and starts nothing:
// Serve does.
func New(cfg Config, deps Deps) (*Service, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	m, err := newMember(cfg)
	if err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		log = cfg.Log.NewLogger("preheat")
	}
	id := replicaID()
	log = log.WithField("replica", id)
	registries, err := cfg.registrySet()
	if err != nil {
		return nil, fmt.Errorf("preheat config: %w", err)
	}
	up, err := newUpstreams(cfg, log)
	if err != nil {
		return nil, fmt.Errorf("preheat config: %w", err)
	}
	st, closeStore, err := openStore(cfg, deps.Store)
	if err != nil {
		return nil, err
	}
	clock := deps.Clock
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	ms := newMetrics(st, deps.ProcessMetrics)
	return &Service{
		cfg:     cfg,
		store:   st,
		now:     clock.Now,
		log:     log,
		id:      id,
		metrics: ms,
		enroll: &nodes.Enroller{Authority: m.authority, Keys: st, Nodes: st,
			MaxSkew: cfg.HeartbeatMaxSkew, TTL: cfg.HeartbeatTTL, KeyRetention: cfg.NodeKeyRetention},
		up: up,
		admit: &admission{cfg: cfg, store: st, now: clock.Now, registries: registries,
			resolver: image.NewResolver(&http.Client{Timeout: 30 * time.Second}, log)},
		runner: runner.New(runner.Config{
			Owner: id, LeaseTTL: cfg.LeaseTTL, JobTimeout: cfg.JobTimeout, Retention: cfg.Retention,
			AgentConcurrency: cfg.AgentConcurrency,
		}, runner.Deps{
			Jobs: st, Progress: st, Leases: st,
			Selector:   runner.StoreSelector{Nodes: st},
			Dispatcher: &runner.Agents{Client: m.agents, Keys: st, Timeout: cfg.FetchTimeout, Log: log},
			Clock:      clock, Log: log, Observer: ms,
		}),
		life: lifecycle{streamsDone: make(chan struct{}), closeStore: closeStore},
	}, nil
}

func newMember(cfg Config) (member, error) {
	secrets, err := cfg.clusterSecrets()
	if err != nil {
		return member{}, fmt.Errorf("preheat config: %w", err)
	}
	authority, err := cluster.NewAuthority(secrets...)
	if err != nil {
		return member{}, err
	}
	// A fresh key per process: agents do not pin preheat, they check
	// that it is a member.
	identity, err := authority.Issue("preheat", nil)
	if err != nil {
		return member{}, err
	}
	return member{authority: authority, identity: identity, agents: nodeapi.NewClient(authority, identity)}, nil
}

func newUpstreams(cfg Config, log *logrus.Entry) (upstreams, error) {
	trackerURL, trackerToken, err := cfg.trackerAPI()
	if err != nil {
		return upstreams{}, err
	}
	policies, err := webhook.Compile(cfg.Policies)
	if err != nil {
		return upstreams{}, err
	}
	up := upstreams{push: webhook.Translator{Registry: cfg.Registry, Policies: policies,
		MaxEvents: cfg.MaxWebhookEvents, MaxJobs: cfg.MaxWebhookJobs}}
	if trackerURL != "" {
		up.swarms = &swarmClient{base: trackerURL, token: trackerToken, client: &http.Client{Timeout: 5 * time.Second}, log: log}
	}
	return up, nil
}

// openStore is st, or the store cfg names when st is nil (Redis when it
// has addrs, else in memory), with what releases it.
func openStore(cfg Config, st Store) (Store, func() error, error) {
	if st != nil {
		return st, func() error { return nil }, nil
	}
	if !cfg.Redis.Enabled() {
		return NewMemoryStore(), func() error { return nil }, nil
	}
	rdb, err := cfg.Redis.NewClient()
	if err != nil {
		return nil, nil, fmt.Errorf("preheat: %w", err)
	}
	return NewRedisStore(rdb, cfg.Redis.KeyPrefix), rdb.Close, nil
}

// replicaID is this process's lease owner id: host, pid and a random part.
func replicaID() string {
	host, _ := os.Hostname()
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	return fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(rb[:]))
}

// ID is this replica's lease owner id.
func (s *Service) ID() string { return s.id }

// Close stops running jobs (leaving them RUNNING for another replica or a
// restart to resume), releases their leases and closes a store New built.
// It is idempotent; Serve calls it on return.
func (s *Service) Close() error {
	s.life.closeOnce.Do(func() {
		s.runner.Close()
		s.life.closeErr = s.life.closeStore()
	})
	return s.life.closeErr
}

// Serve answers the API on l until ctx ends, runs the loop that adopts
// unfinished jobs of stopped replicas, and serves pprof on cfg.Debug.Addr
// when set. It closes the replica on return.
func (s *Service) Serve(ctx context.Context, l net.Listener) (err error) {
	defer func() {
		if cerr := s.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("preheat: close: %w", cerr)
		}
	}()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	addr := l.Addr().String()
	// The listener may not be the configured address: the rule is
	// checked again against what is actually bound.
	if len(s.cfg.APITokens) == 0 && !isLoopbackAddr(addr) {
		_ = l.Close()
		return fmt.Errorf("preheat: listening on %s, beyond loopback, with no apiTokens: set apiTokens or listen on 127.0.0.1", addr)
	}
	s.listenAddr.Store(&addr)
	if s.cfg.Debug.Addr != "" {
		if _, err := debugserver.Serve(ctx, s.cfg.Debug.Addr, s.log); err != nil {
			_ = l.Close()
			return fmt.Errorf("preheat: %w", err)
		}
	}
	srv := httpx.NewServer(s.handler(), s.log)
	srv.RegisterOnShutdown(func() { close(s.life.streamsDone) })
	s.runner.Adopt()
	s.log.WithField("addr", addr).Info("preheat service listening")
	if err := httpx.Serve(ctx, srv, l); err != nil {
		return fmt.Errorf("preheat: serve %s: %w", addr, err)
	}
	return nil
}

// JobRequest is the body of POST /api/v1/jobs.
type JobRequest struct {
	// Image is "host/repo:tag", "repo@digest" or a manifest URL.
	Image string `json:"image"`
	// URL is an alternative to Image: https://host/v2/<repo>/manifests/<ref>.
	URL       string   `json:"url,omitempty"`
	Platforms []string `json:"platforms,omitempty"`
	Groups    []string `json:"groups,omitempty"`
	// Nodes narrows the targets to these node ids or IPs.
	Nodes []string `json:"nodes,omitempty"`
	// Count or Percentage keeps that many (that share) of the live
	// eligible nodes.
	Count      int               `json:"count,omitempty"`
	Percentage int               `json:"percentage,omitempty"`
	Headers    map[string]string `json:"headers,omitempty"`
	Username   string            `json:"username,omitempty"`
	Password   string            `json:"password,omitempty"`

	// internal: set by the Harbor provider for single_seed_peer scope.
	onePerGroup bool
	// internal: the Harbor scheduler cluster ids the groups came from.
	clusterIDs []int
}

// APIError is an error with the HTTP status and code of its answer
// ({"error": Msg, "code": Code}; an empty Code is httpx.CodeFor(Status)).
type APIError struct {
	Status int
	Code   string
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

// Codes of preheat's own refusals (the rest are httpx's).
const (
	// CodeNoTargets: no live node matches the job's target (422).
	CodeNoTargets = "NO_TARGETS"
	// CodeRegistryNotAllowed: the image is on a registry preheat is not
	// configured for (400).
	CodeRegistryNotAllowed = "REGISTRY_NOT_ALLOWED"
	// CodeNodeKeyMismatch: a heartbeat for a node id enrolled with another
	// key (409).
	CodeNodeKeyMismatch = nodes.CodeKeyMismatch
)

func badRequest(format string, a ...any) error {
	return &APIError{Status: http.StatusBadRequest, Code: httpx.CodeInvalid, Msg: fmt.Sprintf(format, a...)}
}

// CreateJob validates and resolves the request, then stores and starts the
// job (admission.admit says what is refused). An identical request while a
// job runs returns that job (created=false).
func (s *Service) CreateJob(ctx context.Context, req JobRequest, source string) (*Job, bool, error) {
	got, created, headers, err := s.admit.admit(ctx, req, source)
	if err != nil || !created {
		return got, false, err
	}
	s.metrics.created.WithLabelValues(source).Inc()
	s.log.WithFields(logrus.Fields{"job": got.ID, "image": got.Image, "groups": got.Groups, "blobs": len(got.Blobs), "trigger": source}).Info("preheat job created")
	s.runner.Start(ctx, got.ID, headers)
	return got, true, nil
}

// CancelJob marks a job CANCELED; the owning replica (any replica) sees
// the state change and stops dispatching.
func (s *Service) CancelJob(ctx context.Context, id int64) (*Job, error) {
	j, err := s.runner.Cancel(ctx, id)
	var fe *runner.FinishedError
	if errors.As(err, &fe) {
		return nil, &APIError{Status: http.StatusConflict, Code: httpx.CodeConflict, Msg: fe.Error()}
	}
	return j, err
}

// Bounds of one job request's lists, whatever the body limit allows: each
// entry costs a lookup or a header on every fetch.
const (
	maxRequestGroups    = 256
	maxRequestNodes     = 10000
	maxRequestPlatforms = 32
	maxRequestHeaders   = 32
	maxHeaderBytes      = 8 << 10
)

func checkRequestSizes(req JobRequest) error {
	switch {
	case len(req.Groups) > maxRequestGroups:
		return badRequest("%d groups; at most %d", len(req.Groups), maxRequestGroups)
	case len(req.Nodes) > maxRequestNodes:
		return badRequest("%d nodes; at most %d", len(req.Nodes), maxRequestNodes)
	case len(req.Platforms) > maxRequestPlatforms:
		return badRequest("%d platforms; at most %d", len(req.Platforms), maxRequestPlatforms)
	case len(req.Headers) > maxRequestHeaders:
		return badRequest("%d headers; at most %d", len(req.Headers), maxRequestHeaders)
	}
	for k, v := range req.Headers {
		if len(k)+len(v) > maxHeaderBytes {
			return badRequest("a header is longer than %d bytes", maxHeaderBytes)
		}
	}
	return nil
}

// sortedUnique is nodes.SortedUnique (handlers here name locals "nodes").
var sortedUnique = nodes.SortedUnique
