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
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/nodeapi"
)

// Service is one preheat replica.
type Service struct {
	cfg      Config
	store    Store
	log      *logrus.Entry
	id       string
	resolver *resolver
	metrics  *metrics

	// authority and identity make this replica a cluster member: it
	// verifies heartbeats with the authority and calls agents (agents)
	// over mutual TLS as identity, pinned to each node's enrolled key.
	authority *cluster.Authority
	identity  *cluster.Identity
	agents    *nodeapi.Client
	// registries maps each configured registry host to its base URL.
	registries map[string]string
	// swarms reads the tracker's swarm listing; nil when no tracker is
	// configured.
	swarms *swarmClient

	mu      sync.Mutex
	creds   map[int64]map[string]string // agent headers per job, memory only
	running map[int64]context.CancelCauseFunc
	sems    map[string]chan struct{} // per agent address

	baseCtx context.Context
	stop    context.CancelFunc
	// streamsDone closes when the HTTP server shuts down, ending console
	// event streams, which would otherwise hold Shutdown to its timeout.
	streamsDone chan struct{}
	wg          sync.WaitGroup
	closeFn     func() error
}

var (
	errShutdown  = errors.New("preheat service shutting down")
	errLeaseLost = errors.New("job lease taken over by another replica")
	errCanceled  = errors.New("job canceled")
	errTimeout   = errors.New("job timed out")
)

// New builds a replica from cfg: Redis store when cfg.Redis.Addrs is set,
// in-memory store otherwise.
func New(cfg Config) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var st Store
	var closeFn func() error
	if len(cfg.Redis.Addrs) > 0 {
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{
			Addrs: cfg.Redis.Addrs, Username: cfg.Redis.Username, Password: cfg.Redis.Password,
			DB: cfg.Redis.DB, MasterName: cfg.Redis.MasterName,
		})
		st = NewRedisStore(rdb, cfg.Redis.Prefix)
		closeFn = rdb.Close
	} else {
		st = NewMemoryStore()
	}
	s, err := NewWithStore(cfg, st)
	if err != nil {
		if closeFn != nil {
			_ = closeFn()
		}
		return nil, err
	}
	s.closeFn = closeFn
	return s, nil
}

// NewWithStore builds a replica on an existing store (tests, embedding).
func NewWithStore(cfg Config, st Store) (*Service, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	secrets, err := cfg.clusterSecrets()
	if err != nil {
		return nil, fmt.Errorf("preheat config: %w", err)
	}
	authority, err := cluster.NewAuthority(secrets...)
	if err != nil {
		return nil, err
	}
	// A fresh key per process: agents do not pin preheat, they check
	// that it is a member.
	identity, err := authority.Issue("preheat", nil)
	if err != nil {
		return nil, err
	}
	registries, err := cfg.registrySet()
	if err != nil {
		return nil, fmt.Errorf("preheat config: %w", err)
	}
	trackerURL, trackerToken, err := cfg.trackerAPI()
	if err != nil {
		return nil, fmt.Errorf("preheat config: %w", err)
	}
	var swarms *swarmClient
	if trackerURL != "" {
		swarms = &swarmClient{base: trackerURL, token: trackerToken, client: &http.Client{Timeout: 5 * time.Second}}
	}
	host, _ := os.Hostname()
	var rb [4]byte
	_, _ = rand.Read(rb[:])
	id := fmt.Sprintf("%s-%d-%s", host, os.Getpid(), hex.EncodeToString(rb[:]))
	ctx, stop := context.WithCancel(context.Background())
	return &Service{
		cfg:        cfg,
		store:      st,
		log:        logrus.WithFields(logrus.Fields{"component": "preheat", "replica": id}),
		id:         id,
		resolver:   &resolver{client: &http.Client{Timeout: 30 * time.Second}},
		metrics:    newMetrics(st),
		authority:  authority,
		identity:   identity,
		agents:     nodeapi.NewClient(authority, identity),
		registries: registries,
		swarms:     swarms,
		creds:      map[int64]map[string]string{},
		running:    map[int64]context.CancelCauseFunc{},
		sems:       map[string]chan struct{}{},
		baseCtx:    ctx,
		stop:       stop,

		streamsDone: make(chan struct{}),
	}, nil
}

// Store exposes the replica's store (tests, embedding).
func (s *Service) Store() Store { return s.store }

// ID is this replica's lease owner id.
func (s *Service) ID() string { return s.id }

// Start launches the background resume loop. Serve calls it.
func (s *Service) Start() {
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		s.resumeLoop()
	}()
}

// Close stops running jobs (leaving them RUNNING for another replica or a
// restart to resume) and releases their leases.
func (s *Service) Close() error {
	s.mu.Lock()
	for _, c := range s.running {
		c(errShutdown)
	}
	s.mu.Unlock()
	s.stop()
	s.wg.Wait()
	if s.closeFn != nil {
		return s.closeFn()
	}
	return nil
}

// Serve runs the API on cfg.Listen until ctx ends, and the pprof listener
// on cfg.Debug.Addr when set.
func (s *Service) Serve(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Debug.Addr != "" {
		if _, err := debugserver.Serve(ctx, s.cfg.Debug.Addr, s.log); err != nil {
			_ = s.Close()
			return fmt.Errorf("preheat: %w", err)
		}
	}
	srv := &http.Server{Addr: s.cfg.Listen, Handler: s.Handler(), ReadHeaderTimeout: 10 * time.Second}
	srv.RegisterOnShutdown(func() { close(s.streamsDone) })
	s.Start()
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	s.log.WithField("listen", s.cfg.Listen).Info("preheat service listening")
	select {
	case err := <-errc:
		_ = s.Close()
		return fmt.Errorf("preheat: listen %s: %w", s.cfg.Listen, err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = srv.Shutdown(sctx)
	return s.Close()
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

// APIError is an error with an HTTP status for the JSON error body.
type APIError struct {
	Status int
	Msg    string
}

func (e *APIError) Error() string { return e.Msg }

func badRequest(format string, a ...any) error {
	return &APIError{Status: http.StatusBadRequest, Msg: fmt.Sprintf(format, a...)}
}

// CreateJob validates and resolves the request, then stores and starts the
// job. Everything that can fail for a bad request fails before the job is
// stored, so a rejected request never leaves a half-created job. An
// identical request while a job runs returns that job (created=false).
func (s *Service) CreateJob(ctx context.Context, req JobRequest, source string) (*Job, bool, error) {
	img := req.Image
	if img == "" {
		img = req.URL
	}
	if img == "" {
		return nil, false, badRequest("image (or url) is required")
	}
	ref, err := ParseImage(img, s.cfg.Registry, s.cfg.PlainHTTPRegistries)
	if err != nil {
		return nil, false, badRequest("%v", err)
	}
	if err := checkRef(ref, img); err != nil {
		return nil, false, badRequest("image %q: %v", img, err)
	}
	if ref, err = s.configuredRegistry(ref); err != nil {
		return nil, false, err
	}
	for _, p := range req.Platforms {
		if strings.Count(p, "/") < 1 || strings.Count(p, "/") > 2 {
			return nil, false, badRequest("platform %q: want os/arch[/variant]", p)
		}
	}
	groups := req.Groups
	if len(groups) == 0 {
		groups = s.cfg.DefaultGroups
	}
	groups = sortedUnique(groups)
	if err := s.checkGroups(ctx, groups); err != nil {
		return nil, false, err
	}
	spec := TargetSpec{Groups: groups, Nodes: sortedUnique(req.Nodes), Count: req.Count, Percentage: req.Percentage, OnePerGroup: req.onePerGroup}
	if err := spec.validate(); err != nil {
		return nil, false, err
	}
	// A job that cannot reach a single node is refused now rather than
	// failing later: Harbor's Kraken driver never polls, so a 2xx here is
	// what its admin sees as the outcome.
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return nil, false, fmt.Errorf("list nodes: %w", err)
	}
	sel := selectTargets(nodes, spec, time.Now())
	if len(sel.UnknownNodes) > 0 {
		return nil, false, badRequest("unknown nodes %v (no node with that id or IP in the target groups)", sel.UnknownNodes)
	}
	if sel.Live() == 0 {
		return nil, false, noTargetsError(spec, sel, len(nodes))
	}
	cred := Credentials{Username: req.Username, Password: req.Password, Headers: req.Headers}
	res, err := s.resolver.Resolve(ctx, ref, req.Platforms, cred)
	if err != nil {
		var re *ResolveError
		if errors.As(err, &re) {
			return nil, false, &APIError{Status: re.Status, Msg: re.Error()}
		}
		return nil, false, err
	}
	platforms := sortedUnique(req.Platforms)
	key := sha256.Sum256([]byte(strings.Join([]string{ref.Registry, ref.Repository, res.Digest, ref.Reference,
		strings.Join(platforms, ","), strings.Join(groups, ","), fmt.Sprint(req.onePerGroup),
		strings.Join(spec.Nodes, ","), fmt.Sprint(spec.Count, "/", spec.Percentage)}, "\x00")))
	now := time.Now().UTC()
	j := &Job{
		State: StatePending, Image: ref.String(), Registry: ref.Registry, Repository: ref.Repository,
		Reference: ref.Reference, Digest: res.Digest, Platforms: platforms, Groups: groups,
		Nodes: spec.Nodes, Count: spec.Count, Percentage: spec.Percentage, ClusterIDs: req.clusterIDs,
		Blobs: res.Blobs, Source: source, NeedsCreds: len(res.AgentHeaders) > 0,
		DedupeKey: hex.EncodeToString(key[:]), CreatedAt: now, UpdatedAt: now,
	}
	if req.onePerGroup {
		j.Source += ":single"
	}
	got, created, err := s.store.CreateJob(ctx, j)
	if err != nil {
		return nil, false, fmt.Errorf("store job: %w", err)
	}
	if !created {
		return got, false, nil
	}
	s.metrics.created.WithLabelValues(source).Inc()
	s.log.WithFields(logrus.Fields{"job": got.ID, "image": got.Image, "groups": groups, "blobs": len(got.Blobs), "source": source}).Info("preheat job created")
	if len(res.AgentHeaders) > 0 {
		s.mu.Lock()
		s.creds[got.ID] = res.AgentHeaders
		s.mu.Unlock()
	}
	if ok, err := s.store.AcquireLease(ctx, got.ID, s.id, s.cfg.LeaseTTL); err == nil && ok {
		s.launch(got.ID)
	}
	return got, true, nil
}

// CancelJob marks a job CANCELED; the owning replica (any replica) sees
// the state change and stops dispatching.
func (s *Service) CancelJob(ctx context.Context, id int64) (*Job, error) {
	j, err := s.store.UpdateJob(ctx, id, s.cfg.Retention, func(j *Job) error {
		if j.State.Terminal() {
			return &APIError{Status: http.StatusConflict, Msg: fmt.Sprintf("job %d already finished (%s)", id, j.State)}
		}
		now := time.Now().UTC()
		j.State, j.Error, j.UpdatedAt, j.FinishedAt = StateCanceled, "canceled by request", now, now
		return nil
	})
	if err != nil {
		return nil, err
	}
	s.metrics.finished(j)
	s.mu.Lock()
	if c := s.running[id]; c != nil {
		c(errCanceled)
	}
	s.mu.Unlock()
	return j, nil
}

func sortedUnique(in []string) []string {
	out := []string{}
	for _, v := range in {
		if v = strings.TrimSpace(v); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}

// knownGroups is every group a node registered with (alive or not) plus
// groups named in config.
func (s *Service) knownGroups(ctx context.Context) (map[string]bool, []Node, error) {
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, n := range nodes {
		for _, g := range n.Groups {
			known[g] = true
		}
	}
	for _, g := range s.cfg.DefaultGroups {
		known[g] = true
	}
	for _, p := range s.cfg.Policies {
		for _, g := range p.Groups {
			known[g] = true
		}
	}
	for _, gs := range s.cfg.Harbor.Clusters {
		for _, g := range gs {
			known[g] = true
		}
	}
	return known, nodes, nil
}

func (s *Service) checkGroups(ctx context.Context, groups []string) error {
	known, _, err := s.knownGroups(ctx)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for _, g := range groups {
		if !known[g] {
			return badRequest("unknown group %q (no node registered with it)", g)
		}
	}
	return nil
}

// configuredRegistry refuses an image on a registry preheat is not
// configured for, before any connection: a job's registry is where preheat
// sends the job's credentials and where the agents fetch from. The base URL
// is the configured one (its scheme wins over the reference's).
func (s *Service) configuredRegistry(ref ImageRef) (ImageRef, error) {
	host := ref.Registry
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	base, ok := s.registries[strings.ToLower(host)]
	if !ok {
		return ref, badRequest("registry %s is not configured on this preheat service (registry, registries)", host)
	}
	ref.Registry = base
	return ref, nil
}
