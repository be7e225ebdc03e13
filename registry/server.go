// Package registry runs Shoal's registry: distribution's registry, unchanged
// in behaviour and configuration, with the p2p storage middleware's other
// half around it — the torrent metadata endpoint, the seeder, and the
// repository middleware that seeds the blobs of each pushed manifest.
package registry

import (
	"context"
	"crypto/tls"
	"errors"
	"expvar"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/health"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/token"

	// The storage drivers, auth backends and middlewares of the upstream
	// registry binary (azure and gcs left out: they double the binary and build
	// time; add the import to enable them), so its config.yml works here too.
	_ "github.com/distribution/distribution/v3/registry/auth/htpasswd"
	_ "github.com/distribution/distribution/v3/registry/auth/silly"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	_ "github.com/distribution/distribution/v3/registry/proxy"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/filesystem"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/inmemory"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/cloudfront"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/redirect"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/middleware/rewrite"
	_ "github.com/distribution/distribution/v3/registry/storage/driver/s3-aws"
)

// TorrentPath is the prefix of the torrent metadata endpoint. It is under
// /v2/, so that a reverse proxy forwarding only /v2/ to the registry (as
// Harbor's nginx does, and most registry front ends) passes it, and it can
// never shadow a repository: a name's components start with a letter or a
// digit, never "_".
const TorrentPath = "/v2/_shoal/torrents/"

// LegacyTorrentPath is where metadata URLs pointed before TorrentPath;
// still served, so URLs handed out by an older registry keep working.
const LegacyTorrentPath = "/_shoal/torrents/"

// shoalV2Prefix is the part of /v2/ that Shoal, not distribution, answers.
const shoalV2Prefix = "/v2/_shoal/"

// purposeTorrent marks the tokens of metadata URLs, which only this
// registry checks; announce and origin purposes are shared with the tracker.
const purposeTorrent = "torrent"

// LoadConfig reads a distribution config.yml, applying REGISTRY_*
// environment overrides exactly as the upstream registry does. The v2-era
// redis keys Harbor writes are read too (LoadConfigNotes says how).
func LoadConfig(path string) (*configuration.Configuration, error) {
	cfg, _, err := LoadConfigNotes(path)
	return cfg, err
}

// Deps is what the process hands the registry.
type Deps struct {
	// Log is the registry's logger; nil: one made from the config's log
	// block (NewLogger).
	Log *logrus.Entry
	// ProcessMetrics are the process's Go and process collectors, served on
	// /metrics beside the registry's own; nil: the registry's alone.
	ProcessMetrics prometheus.Gatherer
}

// Server is a Shoal registry.
type Server struct {
	cfg     *configuration.Configuration // New's own copy
	app     *handlers.App
	handler http.Handler
	tls     *tls.Config
	// health holds distribution's own checks (health.storagedriver), which
	// gate registry requests and show on the debug listener's /debug/health.
	health     *health.Registry
	opts       driver.Options
	p2p        bool
	seeding    bool
	urlKeys    *token.Keys
	annKeys    *token.Keys
	metricsReg *prometheus.Registry
	// appMetrics holds distribution's registry_http_* series
	// (instrumentRoutes), served on the debug listener only.
	appMetrics     *prometheus.Registry
	processMetrics prometheus.Gatherer
	metrics        *serverMetrics
	log            *logrus.Entry
	// debugPublic: http.debug.addr is beyond loopback, so it serves
	// Prometheus metrics only (debugMetricsOnly).
	debugPublic bool

	drv *driver.Driver
	oci *ociFront
	// shares is who fetched which range as a swarm share (regshare).
	shares *shareLog
	// senders are the piece-range responses being sent (pieceSenders).
	senders chan struct{}

	mu     sync.Mutex
	seeder *seeder // set by Serve before the listener serves
	served bool
	closed bool
}

// New builds the registry from cfg, which it does not modify. When the
// storage middleware list has a `p2p` entry, the P2P parts are wired to it;
// otherwise this is a plain distribution registry. Nothing listens until
// Serve.
func New(cfg *configuration.Configuration, deps Deps) (*Server, error) {
	metricsOnly, err := debugMetricsOnly(cfg.HTTP.Debug)
	if err != nil {
		return nil, err
	}
	log := deps.Log
	if log == nil {
		var err error
		if log, err = NewLogger(cfg); err != nil {
			return nil, err
		}
	}
	cfg = cloneConfig(cfg)
	tlsConf, err := tlsConfig(cfg)
	if err != nil {
		return nil, err
	}
	s := &Server{
		cfg:            cfg,
		tls:            tlsConf,
		health:         health.NewRegistry(),
		metricsReg:     prometheus.NewRegistry(),
		appMetrics:     prometheus.NewRegistry(),
		processMetrics: deps.ProcessMetrics,
		log:            log,
		debugPublic:    metricsOnly,
		shares:         newShareLog(time.Now),
		senders:        make(chan struct{}, pieceSenders),
	}
	for i, mw := range cfg.Middleware["storage"] {
		if mw.Name != driver.Name {
			continue
		}
		if s.p2p {
			return nil, errors.New("registry config: the p2p storage middleware is listed twice")
		}
		opts, err := driver.ParseOptions(mw.Options)
		if err != nil {
			return nil, err
		}
		s.opts, s.p2p = opts, true
		// The options are this Server's copy (cloneConfig).
		if mw.Options == nil {
			cfg.Middleware["storage"][i].Options = configuration.Parameters{}
		}
		cfg.Middleware["storage"][i].Options[driver.HookOption] = driver.Hook(s)
		cfg.Middleware["storage"][i].Options[driver.LogOption] = log
	}
	s.seeding = s.p2p && !s.opts.Seeder.Disabled
	s.metrics = newMetrics(s.metricsReg, s)
	if s.p2p {
		if err := s.initKeys(); err != nil {
			return nil, err
		}
	}
	if s.seeding {
		// Checked now, so a bad secret stops the start rather than Serve.
		if _, err := s.opts.Cluster.Secrets(); err != nil {
			return nil, fmt.Errorf("registry seeder: %w", err)
		}
	}
	if s.oci, err = newOCIFront(cfg, log); err != nil {
		return nil, err
	}
	// Seeding starts before the referrers index is written, as it did when
	// each was a middleware of its own.
	var observers []manifestObserver
	if s.seeding {
		observers = append(observers, seedObserver{s})
	}
	observers = append(observers, ociObserver{s.oci})
	cfg.Middleware["repository"] = append(cfg.Middleware["repository"], configuration.Middleware{
		Name: manifestsMW, Options: configuration.Parameters{observersOption: observers},
	})
	var app http.Handler
	if s.app, app, err = newApp(context.Background(), cfg, s.appMetrics); err != nil {
		return nil, err
	}
	s.app.RegisterHealthChecks(s.health)
	if s.oci.d == nil {
		s.Close()
		return nil, errors.New("oci storage middleware not applied by distribution")
	}
	if s.p2p && s.drv == nil {
		s.Close()
		return nil, errors.New("p2p middleware configured but not applied by distribution")
	}
	s.handler = otelHandler(s.router(appHandler(app, s.health, cfg, log)))
	if s.p2p && cfg.Storage["redirect"]["disable"] == true {
		s.log.Warn("storage.redirect.disable is true: distribution never asks the p2p middleware about blob GETs, so every node downloads from the registry")
	}
	if s.p2p && s.opts.Tracker.URL == "" {
		s.log.Warn("p2p middleware has no tracker.url: torrents carry no announce URL and peers only find each other through web seeds and PEX")
	}
	return s, nil
}

// initKeys resolves the URL and announce secrets. Whoever holds one mints
// torrent URLs for any repository (URL secrets) or announce tokens for any
// torrent (tracker secrets), so guessable ones stop the start.
func (s *Server) initKeys() error {
	urlSecrets, err := s.urlSecrets()
	if err != nil {
		return err
	}
	if s.urlKeys, err = token.NewKeys(urlSecrets...); err != nil {
		return err
	}
	if s.opts.Tracker.URL != "" {
		if len(s.opts.Tracker.Secrets) == 0 {
			return errors.New("p2p: tracker.secrets is required with tracker.url (the tracker must share it); generate one with `openssl rand -hex 32` and set it directly, as env:VAR or as file:/path")
		}
		ann, err := secret.ResolveAll("p2p tracker.secrets", s.opts.Tracker.Secrets)
		if err != nil {
			return fmt.Errorf("registry config: %w", err)
		}
		if s.annKeys, err = token.NewKeys(ann...); err != nil {
			return fmt.Errorf("p2p tracker secrets: %w", err)
		}
	}
	return nil
}

// urlSecrets are the p2p secrets, else http.secret when it is fit to sign
// with, else (neither set) a fresh one.
func (s *Server) urlSecrets() ([]string, error) {
	if len(s.opts.Secrets) > 0 {
		out, err := secret.ResolveAll("p2p secrets", s.opts.Secrets)
		if err != nil {
			return nil, fmt.Errorf("registry config: %w", err)
		}
		return out, nil
	}
	if hs := s.cfg.HTTP.Secret; hs != "" {
		// distribution uses http.secret as written, so a reference here
		// would be a literal "env:..." to it: refuse rather than let the
		// two disagree about the key.
		if strings.HasPrefix(hs, "env:") || strings.HasPrefix(hs, "file:") {
			return nil, errors.New("registry config: http.secret is used as written by distribution, env: and file: are not read there; set it through REGISTRY_HTTP_SECRET, or set the p2p middleware's secrets")
		}
		if err := secret.Check("http.secret", hs); err != nil {
			return nil, fmt.Errorf("registry config: %w (it also signs torrent URLs while the p2p middleware has no secrets; REGISTRY_HTTP_SECRET sets it from the environment)", err)
		}
		return []string{hs}, nil
	}
	// Like distribution's own http.secret: fine for one instance, replicas
	// behind a load balancer must share a configured one.
	s.log.Warn("no p2p secrets or http.secret configured; generated one, so torrent URLs only work on this instance")
	return []string{secret.Generate()}, nil
}

// Attach implements driver.Hook.
func (s *Server) Attach(d *driver.Driver) { s.drv = d }

// BlobDeleted implements driver.Hook.
func (s *Server) BlobDeleted(dgst digest.Digest) {
	if s.seeder != nil {
		s.seeder.Forget(dgst)
	}
}

// TorrentURL implements driver.Hook: distribution has authorized this GET for
// repo and found the blob; bring it into seeding and hand out a URL that
// carries that decision for a few minutes.
func (s *Server) TorrentURL(r *http.Request, repo string, dgst digest.Digest) (string, error) {
	if slot, ok := r.Context().Value(inlineKey{}).(*inlineSlot); ok {
		// delivery: inline; the answer is written by inlineWriter.
		slot.repo, slot.dgst, slot.set = repo, dgst, true
		return TorrentPath + dgst.String(), nil
	}
	if s.seeder != nil {
		if _, _, err := s.seeder.Ensure(r.Context(), dgst); err != nil {
			s.metrics.redirects.WithLabelValues("error").Inc()
			return "", fmt.Errorf("seed %s: %w", dgst, err)
		}
	}
	q := url.Values{}
	q.Set("repo", repo)
	q.Set("token", s.urlKeys.Sign(purposeTorrent, urlSubject(repo, dgst), time.Now().Add(s.opts.URLExpiry)))
	s.metrics.redirects.WithLabelValues("ok").Inc()
	return s.baseURL(r) + TorrentPath + dgst.String() + "?" + q.Encode(), nil
}

// urlSubject is what metadata and piece-range URL tokens are bound to; the
// purpose keeps the two kinds apart.
func urlSubject(repo string, dgst digest.Digest) []byte {
	return []byte(repo + "@" + dgst.String())
}

func (s *Server) baseURL(r *http.Request) string {
	if s.opts.BaseURL != "" {
		return strings.TrimSuffix(s.opts.BaseURL, "/")
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	if p := r.Header.Get("X-Forwarded-Proto"); p == "http" || p == "https" {
		scheme = p
	}
	return scheme + "://" + r.Host
}

// announceURL returns the tracker URL with a token for purpose.
func (s *Server) announceURL(purpose string, ih metainfo.Hash) string {
	if s.annKeys == nil {
		return ""
	}
	u, err := url.Parse(s.opts.Tracker.URL)
	if err != nil {
		return ""
	}
	q := u.Query()
	q.Set("token", s.annKeys.Sign(purpose, ih[:], time.Now().Add(s.opts.Tracker.TokenExpiry)))
	u.RawQuery = q.Encode()
	return u.String()
}

func (s *Server) originAnnounce(ih metainfo.Hash) []string {
	if u := s.announceURL(token.PurposeOrigin, ih); u != "" {
		return []string{u}
	}
	return nil
}

// router puts Shoal's routes beside distribution's handler next: /v2/
// through the OCI front, /metrics, /healthz and the /_shoal/ endpoints here,
// upstream's "/" (its load balancers' liveness answer) to next, and any
// other path to the house's JSON 404.
func (s *Server) router(next http.Handler) http.Handler {
	r := mux.NewRouter()
	r.Handle("/metrics", metrics.Handler(s.metricsReg, s.processMetrics)).Methods(http.MethodGet)
	r.Handle("/healthz", s.healthCheck()).Methods(http.MethodGet)
	if s.p2p {
		for _, p := range []string{TorrentPath, LegacyTorrentPath} {
			r.HandleFunc(p+"{digest}", s.serveTorrent).Methods(http.MethodGet, http.MethodHead)
		}
		for _, p := range []string{BlobPath, LegacyBlobPath} {
			r.HandleFunc(p+"{digest}", s.serveBlob).Methods(http.MethodGet, http.MethodHead)
		}
	}
	notFound, notAllowed := httpx.NotFound(), httpx.MethodNotAllowed()
	r.NotFoundHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if req.URL.Path == "/" || strings.HasPrefix(req.URL.Path, "/v2/") {
			// A miss under /v2/ is distribution's, as any unknown /v2/ path.
			next.ServeHTTP(w, req)
			return
		}
		notFound.ServeHTTP(w, req)
	})
	r.MethodNotAllowedHandler = http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/v2/") {
			_ = errcode.ServeJSON(w, errcode.ErrorCodeUnsupported.WithMessage("method not allowed"))
			return
		}
		notAllowed.ServeHTTP(w, req)
	})
	inline := s.p2p && s.opts.Delivery == driver.DeliveryInline
	// Registry traffic skips route matching: ordinary pulls must not pay
	// for P2P, not even a regexp per request.
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if strings.HasPrefix(req.URL.Path, "/v2/") && !strings.HasPrefix(req.URL.Path, shoalV2Prefix) {
			if inline && req.Method == http.MethodGet && driver.AcceptsTorrent(req) {
				w, req = s.inlineTorrent(w, req)
			}
			s.oci.serve(w, req, next)
			return
		}
		r.ServeHTTP(w, req)
	})
}

// serveTorrent answers the redirect target: the blob's .torrent with a
// fresh announce token, the registry as web seed, and the private flag. The
// Shoal-Blob-Url header beside it is the blob's piece-range URL, signed for
// the same repository and expiring with the torrent URL; it is a header so
// the .torrent (and its infohash) stays the same whoever fetches it.
func (s *Server) serveTorrent(w http.ResponseWriter, r *http.Request) {
	fail := func(result string, err error) {
		s.metrics.torrents.WithLabelValues(result).Inc()
		_ = errcode.ServeJSON(w, err)
	}
	dgst, err := digest.Parse(mux.Vars(r)["digest"])
	if err != nil {
		fail("bad_request", v2.ErrorCodeDigestInvalid.WithDetail(err.Error()))
		return
	}
	repo, tok := r.URL.Query().Get("repo"), r.URL.Query().Get("token")
	if err := s.urlKeys.Verify(purposeTorrent, urlSubject(repo, dgst), tok, time.Now()); err != nil {
		fail("denied", errcode.ErrorCodeUnauthorized.WithMessage("torrent URL "+err.Error()+"; request the blob again with Accept: "+driver.MediaTypeTorrent))
		return
	}
	var blobURL string
	if exp, ok := token.Expiry(tok); ok {
		blobURL = s.blobURL(r, repo, dgst, exp)
	}
	s.writeTorrent(w, r, repo, dgst, blobURL)
}

// writeTorrent answers 200 with the blob's torrent (the request is
// authorized already, by a signed URL or by distribution) and, if given,
// the piece-range URL in BlobURLHeader.
func (s *Server) writeTorrent(w http.ResponseWriter, r *http.Request, repo string, dgst digest.Digest, blobURL string) {
	fail := func(result string, err error) {
		s.metrics.torrents.WithLabelValues(result).Inc()
		_ = errcode.ServeJSON(w, err)
	}
	var infoBytes []byte
	var ih metainfo.Hash
	var err error
	if s.seeder != nil {
		infoBytes, ih, err = s.seeder.Ensure(r.Context(), dgst)
	} else {
		infoBytes, err = s.drv.Info(r.Context(), dgst)
		ih = metainfo.HashBytes(infoBytes)
	}
	if err != nil {
		if driver.IsNotFound(err) {
			fail("unknown", v2.ErrorCodeBlobUnknown.WithDetail(dgst))
			return
		}
		s.log.WithError(err).WithField("digest", dgst).Error("torrent metadata")
		fail("error", errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}
	mi := metainfo.MetaInfo{
		InfoBytes:    infoBytes,
		Announce:     s.announceURL(token.PurposeAnnounce, ih),
		CreatedBy:    "shoal",
		CreationDate: time.Now().Unix(),
		UrlList:      []string{s.baseURL(r) + "/v2/" + repo + "/blobs/" + dgst.String()},
	}
	body, err := bencode.Marshal(mi)
	if err != nil {
		fail("error", errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}
	s.metrics.torrents.WithLabelValues("ok").Inc()
	w.Header().Set("Content-Type", driver.MediaTypeTorrent)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Docker-Content-Digest", dgst.String())
	if blobURL != "" {
		w.Header().Set(BlobURLHeader, blobURL)
	}
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// healthShare is how long one /healthz report answers every caller.
const healthShare = time.Second

// errStorageUnhealthy is what /healthz says of a failed storage listing.
var errStorageUnhealthy = errors.New("the storage driver did not answer a listing of its root (details in the registry's log)")

// healthCheck is /healthz: the storage driver answers a listing of its root
// (distribution's own check does a Stat of it; a fresh root that does not
// exist yet still proves the backend answers), and, with seeding on, the
// seeder's peer-wire listener takes a connection.
//
// /healthz answers anyone, so it never runs more than one listing a second
// (an object store bills and rate-limits them) and never shows the storage
// error's text, which can name buckets, endpoints and paths: the log has it.
func (s *Server) healthCheck() *httpx.Health {
	h := httpx.NewHealth("registry").Share(healthShare)
	h.Add("storage", func(ctx context.Context) error {
		if _, err := s.oci.d.List(ctx, "/"); err != nil && !driver.IsNotFound(err) {
			s.log.WithError(err).Warn("health check: storage listing failed")
			return errStorageUnhealthy
		}
		return nil
	})
	if s.seeding {
		h.Add("seeder", func(ctx context.Context) error {
			s.mu.Lock()
			sd := s.seeder
			s.mu.Unlock()
			if sd == nil {
				return errors.New("not started")
			}
			return sd.probe(ctx)
		})
	}
	return h
}

// SeederPort is the peer-wire port of the seeder (0 without one, or before
// Serve started it).
func (s *Server) SeederPort() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.seeder == nil {
		return 0
	}
	return s.seeder.Port()
}

// debugHandler is what http.debug.addr serves: the upstream binary's debug
// server on an explicit mux. Upstream serves http.DefaultServeMux, i.e.
// whatever every linked package registered (here pprof only by accident,
// through anacrolix/torrent's envpprof import, plus x/net/trace and
// anacrolix's /debug pages); Shoal keeps pprof, expvar's /debug/vars,
// distribution's /debug/health (over this registry's checks) and, when
// enabled, distribution's prometheus metrics (promHandler).
func (s *Server) debugHandler() http.Handler {
	mux := debugserver.NewMux()
	mux.Handle("/debug/vars", expvar.Handler())
	mux.Handle("/debug/health", healthStatus(s.health))
	prom := s.cfg.HTTP.Debug.Prometheus
	if !prom.Enabled {
		return mux
	}
	path := prom.Path
	if path == "" {
		path = "/metrics"
	}
	promHandler := s.promHandler()
	// Matched by hand: the configured path is not a ServeMux pattern, and
	// must not panic on a clash with a debug path (metrics win then).
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == path || (strings.HasSuffix(path, "/") && strings.HasPrefix(r.URL.Path, path)) {
			promHandler.ServeHTTP(w, r)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Serve starts the seeder and the debug listener, then serves l (wrapped in
// TLS when http.tls says so) until ctx ends, draining requests for
// http.draintimeout (default 5s). It closes the Server on return.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	defer s.Close()
	s.mu.Lock()
	if s.closed || s.served {
		s.mu.Unlock()
		l.Close()
		return errors.New("registry: Serve after Close or a second Serve")
	}
	s.served = true
	s.mu.Unlock()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if s.seeding {
		sd, err := newSeeder(s.drv, s.opts.Seeder, s.opts.Cluster, s.originAnnounce, s.metrics, s.log.WithField("component", "seeder"))
		if err != nil {
			l.Close()
			return err
		}
		s.mu.Lock()
		s.seeder = sd
		s.mu.Unlock()
		go sd.run(ctx, s.opts.Tracker.TokenExpiry)
	}
	if addr := s.cfg.HTTP.Debug.Addr; addr != "" && s.debugPublic {
		if _, err := s.serveMetricsOnly(ctx, addr); err != nil {
			l.Close()
			return fmt.Errorf("registry: http.debug: %w", err)
		}
	} else if addr != "" {
		if _, err := debugserver.ServeHandler(ctx, addr, s.debugHandler(), s.log); err != nil {
			l.Close()
			return fmt.Errorf("registry: http.debug: %w", err)
		}
	}
	if s.tls != nil {
		l = tls.NewListener(l, s.tls)
	}
	s.log.WithField("addr", l.Addr().String()).WithField("tls", s.tls != nil).Info("registry listening")
	srv := httpx.NewServer(s.handler, s.log)
	srv.Protocols = serverProtocols(s.cfg)
	// The piece endpoint paces its responses by the connection (pieceSender).
	srv.ConnContext = withConn
	drain := s.cfg.HTTP.DrainTimeout
	if drain == 0 {
		drain = httpx.ShutdownGrace
	}
	return httpx.ServeGrace(ctx, srv, l, drain)
}

// Close stops the seeder and distribution's background work (upload
// purging, health polls). It is idempotent.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.seeder != nil {
		s.seeder.Close()
	}
	return s.app.Shutdown()
}
