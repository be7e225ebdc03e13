// Package tracker is Shoal's BitTorrent tracker: HTTP announce and scrape
// (BEP 3, 7, 23, 48), with peers in a pluggable store (in-memory, or Redis
// shared by stateless replicas), announces authorised by registry-signed
// tokens and counted only when a cluster member signed them, and a hand-out
// policy that prefers seeders, then the origin, then peers in the
// requester's group, and offers the origin to every young swarm.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/announce"
	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/httpx"
	shoalmetrics "github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/internal/token"
)

// Deps is what the process provides to a tracker.
type Deps struct {
	// Log is the tracker's logger; nil: one of its own built from cfg.Log.
	Log *logrus.Entry
	// ProcessMetrics (the binary's Go and process collectors) is served on
	// /metrics next to the tracker's own; nil: the tracker's alone.
	ProcessMetrics prometheus.Gatherer
	// Store holds the swarms; nil: built from the config (Redis when
	// redis.addrs is set, memory otherwise). The Server owns it either way
	// and closes it in Close.
	Store Store
}

// Server is one tracker instance. It holds no swarm state of its own beyond
// its store, so replicas on a shared Redis are interchangeable.
type Server struct {
	cfg   Config
	store Store
	// storeKind names the store in logs and metric labels.
	storeKind string
	keys      *token.Keys
	// members checks member signatures; nil: no cluster.secret, every
	// announce is taken on its token alone (allowUnsigned).
	members *announce.Verifier
	// apiTokens guard the read API; none: it is off.
	apiTokens []string
	metrics   *metrics
	reg       *prometheus.Registry
	log       *logrus.Entry
	handler   http.Handler
	now       func() time.Time
	// rngs hold the hand-out's sources, each seeded from crypto/rand and
	// used by one announce at a time: no lock on the announce path, and no
	// draw from the process-wide source.
	rngs sync.Pool

	closeOnce sync.Once
	closeErr  error
}

// New validates cfg and builds a Server over deps.Store, or over the store
// cfg describes. It neither listens nor contacts Redis: Serve listens, and
// /healthz reports whether the store answers.
func New(cfg Config, deps Deps) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	secrets, err := cfg.resolveSecrets()
	if err != nil {
		return nil, err
	}
	apiTokens, err := cfg.resolveAPITokens()
	if err != nil {
		return nil, err
	}
	keys, err := token.NewKeys(secrets...)
	if err != nil {
		return nil, fmt.Errorf("tracker: %w", err)
	}
	var members *announce.Verifier
	if joins, err := cfg.clusterSecrets(); err != nil {
		return nil, err
	} else if len(joins) > 0 {
		if members, err = announce.NewVerifier(cfg.SignatureMaxSkew, joins...); err != nil {
			return nil, fmt.Errorf("tracker: %w", err)
		}
	}
	log := deps.Log
	if log == nil {
		log = cfg.Log.NewLogger("tracker")
	}
	store := deps.Store
	if store == nil {
		// Built last: nothing above can fail after it exists, so it never
		// leaks.
		if store, err = newStore(cfg); err != nil {
			return nil, err
		}
	}
	s := &Server{
		cfg:       cfg,
		store:     store,
		storeKind: storeKind(store),
		keys:      keys,
		members:   members,
		apiTokens: apiTokens,
		reg:       prometheus.NewRegistry(),
		log:       log,
		now:       time.Now,
	}
	s.metrics = newMetrics(s.reg, s.storeKind)
	s.handler = s.routes(deps.ProcessMetrics)
	return s, nil
}

// newStore builds the store the config describes.
func newStore(cfg Config) (Store, error) {
	if !cfg.Redis.Enabled() {
		return NewMemoryStore(cfg.PeerTTL), nil
	}
	client, err := cfg.Redis.NewClient()
	if err != nil {
		return nil, fmt.Errorf("tracker config: %w", err)
	}
	return NewRedisStore(client, cfg.Redis.KeyPrefix, cfg.RequestTimeout), nil
}

// storeKind is the store's name in logs and metrics.
func storeKind(st Store) string {
	switch st.(type) {
	case *MemoryStore:
		return "memory"
	case *RedisStore:
		return "redis"
	}
	return "custom"
}

// routes serves /announce and /scrape (bencoded, as BitTorrent clients
// expect, failures included), the read API, /healthz and /metrics. Every
// other answer, router misses included, is the house JSON error.
func (s *Server) routes(process prometheus.Gatherer) http.Handler {
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	notAllowed := httpx.MethodNotAllowed()
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		// Every route of the tracker is read-only.
		w.Header().Set("Allow", "GET, HEAD")
		notAllowed.ServeHTTP(w, req)
	})
	get := []string{http.MethodGet, http.MethodHead}
	r.HandleFunc("/announce", s.handleAnnounce).Methods(get...)
	r.HandleFunc("/scrape", s.handleScrape).Methods(get...)
	r.HandleFunc("/api/v1/swarms", s.handleSwarms).Methods(get...)
	r.Handle("/healthz", httpx.NewHealth("tracker").Add("store", s.checkStore)).Methods(get...)
	r.Handle("/metrics", shoalmetrics.Handler(s.reg, process)).Methods(get...)
	return recoverPanics(s.log, r)
}

// checkStore is /healthz's probe: the store answers a ping within the
// request timeout (the memory store always does).
func (s *Server) checkStore(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	err := s.store.Ping(ctx)
	s.metrics.observeStore("ping", time.Since(start), err)
	return err
}

// Serve serves on l until ctx ends, then drains requests in flight; with
// debug.addr set it also runs the pprof listener for as long. It closes the
// Server on return.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Debug.Addr != "" {
		if _, err := debugserver.Serve(ctx, s.cfg.Debug.Addr, s.log); err != nil {
			l.Close()
			s.Close()
			return fmt.Errorf("tracker: %w", err)
		}
	}
	srv := httpx.NewServer(s.handler, s.log)
	// Announces, scrapes and listings are small and answered within the
	// request timeout; a client taking longer only holds a connection.
	srv.ReadTimeout, srv.WriteTimeout = 10*time.Second, 10*time.Second
	s.log.WithFields(logrus.Fields{"addr": l.Addr().String(), "store": s.storeKind}).Info("tracker listening")
	err := httpx.Serve(ctx, srv, l)
	if cerr := s.Close(); cerr != nil && err == nil {
		err = cerr
	}
	return err
}

// Close releases the store. It is idempotent; Serve calls it on return.
func (s *Server) Close() error {
	s.closeOnce.Do(func() {
		if err := s.store.Close(); err != nil {
			s.closeErr = fmt.Errorf("tracker: close store: %w", err)
		}
	})
	return s.closeErr
}

// requestIP is the announcing peer's IP: the connection's, or the first
// entry of the configured proxy header.
func (s *Server) requestIP(r *http.Request) (netip.Addr, error) {
	if h := s.cfg.RealIPHeader; h != "" {
		if v := r.Header.Get(h); v != "" {
			first, _, _ := strings.Cut(v, ",")
			a, err := netip.ParseAddr(strings.TrimSpace(first))
			if err != nil {
				return netip.Addr{}, fmt.Errorf("header %s: %w", h, err)
			}
			return a.Unmap(), nil
		}
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return netip.Addr{}, fmt.Errorf("remote address %q: %w", r.RemoteAddr, err)
	}
	// Dual-stack listeners report IPv4 peers as ::ffff:a.b.c.d; hand them
	// out as IPv4 so they go into the compact "peers" string.
	return ap.Addr().Unmap(), nil
}

// authorize returns the class an infohash's token grants: ClassOrigin for
// the registry's seeder, otherwise ok means an ordinary peer.
func (s *Server) authorize(ih [20]byte, tok string) (origin bool, err error) {
	now := s.now()
	s.metrics.tokenChecks.Inc()
	err = s.keys.Verify(token.PurposeAnnounce, ih[:], tok, now)
	if err == nil {
		return false, nil
	}
	if errors.Is(err, token.ErrInvalid) {
		s.metrics.tokenChecks.Inc()
		if oerr := s.keys.Verify(token.PurposeOrigin, ih[:], tok, now); oerr == nil {
			return true, nil
		} else if errors.Is(oerr, token.ErrExpired) {
			err = oerr
		}
	}
	s.metrics.rejected.WithLabelValues(tokenReason(err)).Inc()
	return false, err
}

func tokenReason(err error) string {
	switch {
	case errors.Is(err, token.ErrMissing):
		return "missing"
	case errors.Is(err, token.ErrMalformed):
		return "malformed"
	case errors.Is(err, token.ErrExpired):
		return "expired"
	}
	return "invalid"
}

// scrape reads the counts of ihs from the store.
func (s *Server) scrape(ctx context.Context, ihs [][20]byte) ([]Counts, error) {
	start := time.Now()
	counts, err := s.store.Scrape(ctx, s.now(), ihs)
	s.metrics.observeStore("scrape", time.Since(start), err)
	return counts, err
}
