// Package tracker is Shoal's BitTorrent tracker: HTTP announce and scrape
// (BEP 3, 7, 23, 48) on top of anacrolix's tracker server packages, with peers
// in a pluggable store (in-memory, or Redis shared by stateless replicas),
// announces authorised by registry-signed tokens, and a hand-out policy that
// prefers seeders, then the origin, then peers in the requester's group.
package tracker

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/anacrolix/generics"
	trackerServer "github.com/anacrolix/torrent/tracker/server"
	"github.com/anacrolix/torrent/tracker/udp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/token"
)

// Token purposes, shared with the registry through the token package.
const (
	PurposeAnnounce = token.PurposeAnnounce
	PurposeOrigin   = token.PurposeOrigin
)

// Server is one tracker instance. It holds no swarm state of its own beyond
// its store, so replicas on a shared Redis are interchangeable.
type Server struct {
	cfg   Config
	store Store
	keys  *token.Keys
	// apiTokens guard the read API; none: it is off.
	apiTokens []string
	ann       *trackerServer.AnnounceHandler
	metrics   *metrics
	reg       *prometheus.Registry
	log       *logrus.Entry
	handler   http.Handler
	now       func() time.Time
}

// New builds a Server and its store from cfg.
func New(cfg Config) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var store Store
	switch cfg.Store {
	case "redis":
		store = NewRedisStore(NewRedisClient(cfg.Redis), cfg.Redis.KeyPrefix, cfg.RequestTimeout)
	default:
		store = NewMemoryStore(cfg.PeerTTL)
	}
	s, err := NewWithStore(cfg, store)
	if err != nil {
		store.Close()
		return nil, err
	}
	return s, nil
}

// NewRedisClient builds a go-redis UniversalClient with bounded timeouts and
// few retries: a tracker should fail an announce fast and let the client
// retry rather than queue work behind a dead Redis.
func NewRedisClient(rc RedisConfig) redis.UniversalClient {
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 rc.Addrs,
		MasterName:            rc.MasterName,
		Username:              rc.Username,
		Password:              rc.Password,
		SentinelUsername:      rc.SentinelUsername,
		SentinelPassword:      rc.SentinelPassword,
		DB:                    rc.DB,
		DialTimeout:           rc.DialTimeout,
		ReadTimeout:           rc.ReadTimeout,
		WriteTimeout:          rc.WriteTimeout,
		PoolSize:              rc.PoolSize,
		PoolTimeout:           rc.ReadTimeout + rc.WriteTimeout,
		MaxRetries:            1,
		DialerRetries:         1,
		DialerRetryTimeout:    10 * time.Millisecond,
		ContextTimeoutEnabled: true,
	})
}

// NewWithStore builds a Server over an existing store, which it then owns.
func NewWithStore(cfg Config, store Store) (*Server, error) {
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
	s := &Server{
		cfg:       cfg,
		store:     store,
		keys:      keys,
		apiTokens: apiTokens,
		reg:       prometheus.NewRegistry(),
		log:       logrus.WithField("component", "tracker"),
		now:       time.Now,
	}
	s.metrics = newMetrics(s.reg, cfg.Store)
	s.ann = &trackerServer.AnnounceHandler{AnnounceTracker: announceTracker{s}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /announce", s.handleAnnounce)
	mux.HandleFunc("GET /scrape", s.handleScrape)
	mux.HandleFunc("GET /api/v1/swarms", s.handleSwarms)
	mux.HandleFunc("/api/v1/", func(w http.ResponseWriter, r *http.Request) {
		// The read API answers in JSON even where the mux would not.
		if r.URL.Path == "/api/v1/swarms" {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSONError(w, http.StatusMethodNotAllowed, "use GET")
			return
		}
		writeJSONError(w, http.StatusNotFound, "no such API route: "+r.URL.Path)
	})
	mux.HandleFunc("GET /healthz", s.handleHealthz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	s.handler = recoverBencoded(s.log, mux)
	return s, nil
}

// Handler serves /announce, /scrape, /api/v1/swarms, /healthz and /metrics.
func (s *Server) Handler() http.Handler { return s.handler }

// Serve serves on l until ctx ends, then drains for up to five seconds. It
// closes the store on return. With debug.addr set it also runs the pprof
// listener for as long.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.cfg.Debug.Addr != "" {
		if _, err := debugserver.Serve(ctx, s.cfg.Debug.Addr, s.log); err != nil {
			l.Close()
			s.store.Close()
			return fmt.Errorf("tracker: %w", err)
		}
	}
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		MaxHeaderBytes:    16 << 10,
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(l) }()
	s.log.WithFields(logrus.Fields{"addr": l.Addr().String(), "store": s.cfg.Store}).Info("tracker listening")
	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = hs.Shutdown(sctx)
		cancel()
		<-errc
	}
	if cerr := s.store.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("tracker: close store: %w", cerr)
	}
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// Close releases the store when Serve is not used.
func (s *Server) Close() error { return s.store.Close() }

func (s *Server) handleHealthz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	err := s.store.Ping(ctx)
	s.metrics.observeStore("ping", time.Since(start), err)
	if err != nil {
		http.Error(w, "unhealthy: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	fmt.Fprintln(w, "ok")
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
	err = s.keys.Verify(PurposeAnnounce, ih[:], tok, now)
	if err == nil {
		return false, nil
	}
	if errors.Is(err, token.ErrInvalid) {
		if oerr := s.keys.Verify(PurposeOrigin, ih[:], tok, now); oerr == nil {
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

// announceTracker adapts the store to anacrolix's AnnounceTracker. The
// request's parsed extras (class, group, numwant) travel in the context
// because the library's request type has no room for them; TrackAnnounce
// does the whole store round trip and GetPeers only applies the policy to
// its result, so an announce costs one store call.
type announceTracker struct{ s *Server }

type ctxKey struct{}

type announceState struct {
	peer      Peer
	stopped   bool
	completed bool
	numwant   int
	swarm     Swarm
	// byAddr maps handed-out addresses back to peers, for peer ids in
	// non-compact responses.
	byAddr map[netip.AddrPort]Peer
}

func stateFrom(ctx context.Context) (*announceState, error) {
	st, ok := ctx.Value(ctxKey{}).(*announceState)
	if !ok {
		return nil, errors.New("tracker: announce without request state")
	}
	return st, nil
}

func (t announceTracker) TrackAnnounce(ctx context.Context, req udp.AnnounceRequest, addr trackerServer.AnnounceAddr) error {
	st, err := stateFrom(ctx)
	if err != nil {
		return err
	}
	st.peer.Addr = addr
	sample := 0
	if !st.stopped {
		sample = st.numwant
		if st.peer.Group != "" {
			// Oversample so same-group peers can be found beyond the first
			// numwant random picks. Locality is exact for swarms up to this
			// size and best effort (a random 4x sample) above it.
			sample *= 4
		}
	}
	in := AnnounceInput{
		InfoHash:  req.InfoHash,
		Peer:      st.peer,
		Stopped:   st.stopped,
		Completed: st.completed,
		TTL:       t.s.cfg.PeerTTL,
		Sample:    sample,
	}
	start := time.Now()
	st.swarm, err = t.s.store.Announce(ctx, t.s.now(), in)
	t.s.metrics.observeStore("announce", time.Since(start), err)
	return err
}

func (t announceTracker) GetPeers(ctx context.Context, _ trackerServer.InfoHash, opts trackerServer.GetPeersOpts, remote trackerServer.AnnounceAddr) (ret trackerServer.ServerAnnounceResult) {
	st, err := stateFrom(ctx)
	if err != nil {
		ret.Err = err
		return
	}
	limit := st.numwant
	if opts.MaxCount.Ok && int(opts.MaxCount.Value) < limit {
		limit = int(opts.MaxCount.Value)
	}
	sel := selectPeers(st.swarm.Candidates, st.peer.ID, remote, st.peer.Group, limit)
	st.byAddr = make(map[netip.AddrPort]Peer, len(sel))
	for _, p := range sel {
		st.byAddr[p.Addr] = p
		ret.Peers = append(ret.Peers, trackerServer.PeerInfo{AnnounceAddr: p.Addr})
	}
	ret.Interval = generics.Some(int32(t.s.cfg.Interval / time.Second))
	ret.Seeders = generics.Some(int32(st.swarm.Complete))
	ret.Leechers = generics.Some(int32(st.swarm.Incomplete))
	return
}

func (t announceTracker) Scrape(ctx context.Context, ihs []trackerServer.InfoHash) ([]udp.ScrapeInfohashResult, error) {
	raw := make([][20]byte, len(ihs))
	for i, h := range ihs {
		raw[i] = h
	}
	start := time.Now()
	counts, err := t.s.store.Scrape(ctx, t.s.now(), raw)
	t.s.metrics.observeStore("scrape", time.Since(start), err)
	if err != nil {
		return nil, err
	}
	out := make([]udp.ScrapeInfohashResult, len(counts))
	for i, c := range counts {
		out[i] = udp.ScrapeInfohashResult{Seeders: int32(c.Complete), Leechers: int32(c.Incomplete), Completed: int32(c.Downloaded)}
	}
	return out, nil
}
