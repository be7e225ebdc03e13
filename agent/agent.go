package agent

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/agent/internal/fetch"
	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/agent/internal/peer"
	"github.com/shoalproject/shoal/agent/internal/store"
	"github.com/shoalproject/shoal/internal/announce"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/metrics"
)

// Agent is one node daemon: the wiring of the mirror and control
// handlers to the store and the downloads.
type Agent struct {
	cfg     Config
	store   *store.Store
	metrics *agentMetrics
	log     *logrus.Entry

	// authority and identity make this node a cluster member: every
	// connection to or from another member is mutually authenticated
	// with them. The node key lives in the cache directory (node.key) so
	// the identity preheat enrolled survives restarts.
	authority *cluster.Authority
	identity  *cluster.Identity
	// origin makes the requests to upstream registries.
	origin *origin.Client
	// fetch runs the downloads, one per blob and upstream.
	fetch *fetch.Fetcher
	// p2p is the BitTorrent client and the data path (nil when P2P is
	// disabled): built by New, listening from Serve.
	p2p *peer.Client
	obs observability

	life lifetime
}

// observability is what the agent shows of itself.
type observability struct {
	// metricsHandler serves the agent's registry and the process's;
	// health is /healthz on every listener that has one.
	metricsHandler http.Handler
	health         *httpx.Health
	// metricsToken guards the metrics listener ("" only on loopback).
	metricsToken string
	// started is when this process started; the heartbeat's counters
	// count from it.
	started time.Time
	// hb is the last outcome of the preheat heartbeat, for /healthz.
	hb heartbeatState
}

// lifetime is the agent's: downloads outlive requests, not Close.
type lifetime struct {
	ctx       context.Context
	cancel    context.CancelFunc
	closeOnce sync.Once
}

// Deps is what the process hands an agent.
type Deps struct {
	// Log is where the agent logs (nil: a logger of its own built from
	// cfg.Log).
	Log *logrus.Entry
	// ProcessMetrics are the process's Go and process collectors, served
	// next to the agent's own metrics (nil: the agent's alone).
	ProcessMetrics prometheus.Gatherer
}

// New builds an agent from cfg (validated here). It opens the cache and
// loads or creates the node key; it listens on nothing: every listener,
// the BitTorrent client's and the data path's included, comes with Serve.
func New(cfg Config, deps Deps) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.normalized()
	log := deps.Log
	if log == nil {
		log = cfg.Log.NewLogger("agent")
	}
	log = log.WithField("node", cfg.Node.ID)
	secrets, err := cfg.clusterSecrets()
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	metricsToken, err := cfg.metricsToken()
	if err != nil {
		return nil, fmt.Errorf("agent config: %w", err)
	}
	authority, err := cluster.NewAuthority(secrets...)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		cfg:       cfg,
		authority: authority,
		log:       log,
		life:      lifetime{ctx: ctx, cancel: cancel},
	}
	st, err := store.Open(cfg.Cache.Dir, store.Options{MaxBytes: cfg.Cache.MaxBytes, Log: log, OnEvict: func(hexd string) {
		a.metrics.evictions.Inc()
		a.fetch.Unseed(hexd)
	}})
	if err != nil {
		cancel()
		return nil, err
	}
	key, err := cluster.LoadOrCreateKey(filepath.Join(cfg.Cache.Dir, "node.key"))
	if err != nil {
		cancel()
		return nil, err
	}
	if a.identity, err = authority.Issue(cfg.Node.ID, key); err != nil {
		cancel()
		return nil, err
	}
	a.store = st
	a.obs.started, a.obs.metricsToken = time.Now().UTC(), metricsToken
	t := cfg.UpstreamTimeouts
	tr := origin.NewTransport(origin.Timeouts{Dial: t.Dial, TLSHandshake: t.TLSHandshake, ResponseHeader: t.ResponseHeader, IdleRead: t.IdleRead})
	a.origin = origin.NewClient(tr, t.IdleRead, cfg.Cache.AuthTTL)
	a.metrics = newMetrics(a)
	a.obs.metricsHandler = metrics.Handler(a.metrics.reg, deps.ProcessMetrics)
	a.obs.health = a.newHealth()
	fdeps := fetch.Deps{Store: st, Origin: a.origin, Metrics: fetchMetrics{a.metrics}, Log: log}
	if cfg.P2P.Enabled {
		a.p2p = peer.New(peer.Config{
			Listen: cfg.P2P.Listen, AdvertiseIP: cfg.P2P.AdvertiseIP, DataListen: cfg.P2P.DataListen,
			UploadSlots: cfg.P2P.UploadSlots, UploadBytesPerSec: cfg.P2P.UploadBytesPerSec,
			DownloadBytesPerSec: cfg.P2P.DownloadBytesPerSec, Authority: authority, Identity: a.identity,
			Readers: st.Readers(), Transport: tr, Log: log,
			SignAnnounce: announce.Director(secrets[0], a.identity.Name),
		})
		fdeps.Peers = a.p2p
	}
	a.fetch = fetch.New(a.life.ctx, cfg.fetchConfig(), fdeps)
	return a, nil
}

// PeerPort is the BitTorrent listen port (0 without P2P).
func (a *Agent) PeerPort() int {
	if a.p2p == nil {
		return 0
	}
	return a.p2p.Port()
}

// Serve serves the mirror on l, the agent's main listener, and opens the
// secondary listeners its config names (control, metrics, debug, and with
// P2P the BitTorrent and data listeners, after which it resumes seeding
// the cached blobs), until ctx ends or one of them fails. It closes the
// agent on return.
func (a *Agent) Serve(ctx context.Context, l net.Listener) error {
	defer a.Close()
	type listener struct {
		name string
		srv  *http.Server
		l    net.Listener
	}
	ls := []listener{{"mirror", httpx.NewServer(a.mirrorHandler(), a.log.WithField("listener", "mirror")), l}}
	closeAll := func() {
		for _, x := range ls {
			x.l.Close()
		}
	}
	if a.cfg.Control.Addr != "" {
		cl, err := a.controlListener()
		if err != nil {
			closeAll()
			return err
		}
		ls = append(ls, listener{"control", httpx.NewServer(a.controlHandler(), a.log.WithField("listener", "control")), cl})
	}
	if a.cfg.Metrics.Addr != "" {
		ml, err := net.Listen("tcp", a.cfg.Metrics.Addr)
		if err != nil {
			closeAll()
			return fmt.Errorf("agent metrics listen %s: %w", a.cfg.Metrics.Addr, err)
		}
		ls = append(ls, listener{"metrics", httpx.NewServer(a.metricsListenerHandler(), a.log.WithField("listener", "metrics")), ml})
	}
	g, gctx := errgroup.WithContext(ctx)
	if a.p2p != nil {
		if err := a.p2p.Start(); err != nil {
			closeAll()
			return err
		}
		g.Go(func() error {
			if err := a.p2p.ServeData(gctx); err != nil {
				return fmt.Errorf("agent data server: %w", err)
			}
			return errServerDone
		})
		go a.fetch.Reseed(a.life.ctx, a.store)
	}
	a.serveDebug(gctx)
	for _, x := range ls {
		g.Go(func() error {
			if err := httpx.Serve(gctx, x.srv, x.l); err != nil {
				return fmt.Errorf("agent %s server: %w", x.name, err)
			}
			// One listener ending ends them all.
			return errServerDone
		})
	}
	a.log.WithFields(logrus.Fields{"mirror": l.Addr().String(), "control": a.cfg.Control.Addr, "metrics": a.cfg.Metrics.Addr,
		"upstreams": len(a.cfg.Upstreams)}).Info("agent serving")
	if a.cfg.Preheat.URL != "" {
		go a.heartbeatLoop(gctx)
	}
	if err := g.Wait(); !errors.Is(err, errServerDone) {
		return err
	}
	return nil
}

// errServerDone makes the errgroup stop every listener once one of them
// has stopped, whatever the reason.
var errServerDone = errors.New("server done")

// Close stops the agent's downloads, seeding and peer listeners. It is
// idempotent; Serve calls it on return.
func (a *Agent) Close() error {
	a.life.closeOnce.Do(func() {
		a.life.cancel()
		if a.p2p != nil {
			a.p2p.Close()
		}
	})
	return nil
}

// pickUpstream resolves containerd's ?ns=<host>; empty ns means the default.
func (a *Agent) pickUpstream(ns string) (*Upstream, bool) {
	for i := range a.cfg.Upstreams {
		u := &a.cfg.Upstreams[i]
		if ns == "" && u.Default {
			return u, true
		}
		if ns != "" && strings.EqualFold(u.Host, ns) {
			return u, true
		}
	}
	// docker.io is what containerd sends for Docker Hub; accept the usual
	// aliases of a configured hub upstream.
	if ns == "docker.io" || ns == "registry-1.docker.io" || ns == "index.docker.io" {
		for i := range a.cfg.Upstreams {
			switch a.cfg.Upstreams[i].Host {
			case "docker.io", "registry-1.docker.io", "index.docker.io":
				return &a.cfg.Upstreams[i], true
			}
		}
	}
	return nil, false
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

func (a *Agent) activeTorrents() int {
	if a.p2p == nil {
		return 0
	}
	return a.p2p.ActiveTorrents()
}

// uploadedBytes only grows.
// dataStats is the data path's counters (zero without P2P).
func (a *Agent) dataStats() peer.DataStats {
	if a.p2p == nil {
		return peer.DataStats{}
	}
	return a.p2p.DataStats()
}

func (a *Agent) uploadedBytes() int64 {
	if a.p2p == nil {
		return 0
	}
	return a.p2p.UploadedBytes()
}

// fetchConfig is what the downloads take from the agent's configuration.
func (c Config) fetchConfig() fetch.Config {
	fc := fetch.Config{MaxBytes: c.Cache.MaxBytes, StallTimeout: c.P2P.StallTimeout, Deadline: c.P2P.Deadline,
		DownloadBytesPerSec: c.P2P.DownloadBytesPerSec, SeedTime: c.P2P.SeedTime}
	for _, u := range c.Upstreams {
		fc.Upstreams = append(fc.Upstreams, u.URL)
	}
	if len(c.Node.Groups) > 0 {
		fc.Group = c.Node.Groups[0]
	}
	return fc
}

// allowUpstream refuses registries that are not configured upstreams: the
// agent connects to nothing else, whatever a request names.
func (a *Agent) allowUpstream(base string) (*Upstream, error) {
	urls := make([]string, len(a.cfg.Upstreams))
	for i, u := range a.cfg.Upstreams {
		urls[i] = u.URL
	}
	i, err := origin.Allowed(urls, base)
	if err != nil {
		return nil, err
	}
	return &a.cfg.Upstreams[i], nil
}
