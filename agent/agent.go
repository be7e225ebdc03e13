package agent

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"
	"golang.org/x/time/rate"

	"github.com/shoalproject/shoal/internal/announce"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/internal/peerid"
	"github.com/shoalproject/shoal/internal/peerwire"
)

// Agent is one node daemon: mirror API, control API, cache and swarm client.
type Agent struct {
	cfg     Config
	cache   *Cache
	metrics *agentMetrics
	log     *logrus.Entry

	// authority and identity make this node a cluster member: every
	// connection to or from another member is mutually authenticated
	// with them. The node key lives in the cache directory (node.key) so
	// the identity preheat enrolled survives restarts.
	authority *cluster.Authority
	identity  *cluster.Identity
	// started is when this process started; the heartbeat's counters
	// count from it.
	started time.Time

	// plain follows redirects (Go drops Authorization when a redirect
	// leaves the original host, which is what storage redirects need);
	// noRedirect lets the swarm path see the registry's 307.
	plain      *http.Client
	noRedirect *http.Client

	tc *torrent.Client // nil when P2P is disabled
	// wire is tc's only listener and dialer: mutual TLS with cluster
	// certificates (internal/peerwire).
	wire       *peerwire.Wire
	httpRate   *rate.Limiter // downloads; nil = unlimited
	uploadRate *rate.Limiter // the data path's uploads; nil = unlimited
	// peerClient talks to other nodes' data listeners.
	peerClient *http.Client
	// dataL is the data path's listener (nil without P2P); its port is
	// told to every node this one connects to.
	dataL net.Listener
	// swarms are the blobs downloading through the swarm now, by
	// infohash, for the extension messages other nodes send.
	swarms sync.Map // metainfo.Hash → *swarmDownload
	// stores are the open blob files of the torrents, by infohash, for
	// the data server.
	stores sync.Map // metainfo.Hash → *fileTorrent
	// peerPorts are the data ports other nodes told us, per connection
	// (every connection greets), forgotten when it closes: a peer making
	// connections under fresh IDs must not grow the map.
	peerPorts sync.Map // *torrent.PeerConn → int
	// received counts piece bytes arriving from anywhere, for the stall
	// watch: progress of any blob means the node is not stalled.
	received atomic.Int64
	// strict holds the blobs (sha256 hex) that failed their digest after
	// unchecked pieces from nodes: their next downloads check every piece.
	strict sync.Map
	// uploadSlots bounds the data path's concurrent uploads.
	uploadSlots chan struct{}
	// servedBytes counts piece bytes sent to nodes over the data path.
	servedBytes atomic.Int64

	mu         sync.Mutex
	flights    map[flightKey]*flight
	partialSeq uint64 // names partial files apart
	seeds      map[string]*seed

	authMu    sync.Mutex
	authCache map[string]accessOK

	// metricsHandler serves the agent's registry and the process's;
	// health is /healthz on every listener that has one.
	metricsHandler http.Handler
	health         *httpx.Health
	// metricsToken guards the metrics listener ("" only on loopback).
	metricsToken string
	// hb is the last outcome of the preheat heartbeat, for /healthz.
	hb heartbeatState

	ctx       context.Context // lives until Close; downloads outlive requests
	cancel    context.CancelFunc
	closeOnce sync.Once
}

type seed struct {
	t     *torrent.Torrent
	timer *time.Timer
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

// New builds an agent from cfg (validated here). It opens the cache, loads
// or creates the node key and, with P2P on, starts the BitTorrent client
// and its data listener; the mirror, control and metrics listeners come
// with Serve.
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
	c, err := OpenCache(cfg.Cache.Dir, cfg.Cache.MaxBytes, log)
	if err != nil {
		return nil, err
	}
	key, err := cluster.LoadOrCreateKey(filepath.Join(cfg.Cache.Dir, "node.key"))
	if err != nil {
		return nil, err
	}
	identity, err := authority.Issue(cfg.Node.ID, key)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	a := &Agent{
		cfg:          cfg,
		cache:        c,
		authority:    authority,
		identity:     identity,
		started:      time.Now().UTC(),
		log:          log,
		metricsToken: metricsToken,
		flights:      map[flightKey]*flight{},
		seeds:        map[string]*seed{},
		authCache:    map[string]accessOK{},
		uploadSlots:  make(chan struct{}, cfg.P2P.UploadSlots),
		ctx:          ctx,
		cancel:       cancel,
	}
	tr := newUpstreamTransport(cfg)
	up := idleReadTransport{rt: tr, idle: cfg.UpstreamTimeouts.IdleRead}
	a.plain = &http.Client{Transport: up}
	a.noRedirect = &http.Client{Transport: up, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	a.metrics = newMetrics(a)
	a.metricsHandler = metrics.Handler(a.metrics.reg, deps.ProcessMetrics)
	a.health = a.newHealth()
	c.onEvict = a.dropSeed
	c.onEvicts = func() { a.metrics.evictions.Inc() }
	if cfg.P2P.DownloadBytesPerSec > 0 {
		a.httpRate = rate.NewLimiter(rate.Limit(cfg.P2P.DownloadBytesPerSec), 1<<20)
	}
	if cfg.P2P.UploadBytesPerSec > 0 {
		a.uploadRate = rate.NewLimiter(rate.Limit(cfg.P2P.UploadBytesPerSec), 1<<20)
	}
	ptr := tr.Clone()
	// Nodes' data listeners are on the LAN: never through a proxy, and
	// idle connections to many nodes are cheap to keep.
	ptr.Proxy = nil
	ptr.MaxIdleConnsPerHost = 8
	ptr.DisableCompression = true
	// Data listeners serve members only (dataserver.go): present this
	// node's certificate and accept any member's. HTTP/1.1: one bulk
	// range per connection, no multiplexing to pay for.
	ptr.TLSClientConfig = authority.ClientTLS(identity, nil)
	ptr.ForceAttemptHTTP2 = false
	ptr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	a.peerClient = &http.Client{Transport: ptr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	if cfg.P2P.Enabled {
		if err := a.startTorrentClient(); err != nil {
			cancel()
			return nil, err
		}
		go a.reseed(ctx)
	}
	return a, nil
}

func (a *Agent) startTorrentClient() error {
	// No socket of the client's own (uTP also because go-utp is a stub in
	// this build): the peer wire is peerwire's mutual TLS, members only.
	tcfg, wireNet := peerwire.ClientConfig(a.cfg.P2P.Listen, net.ParseIP(a.cfg.P2P.AdvertiseIP))
	tcfg.PeerID = peerid.New(peerid.NodePrefix)
	// Announces carry this node's member signature: the tracker hands out
	// members only.
	secrets, err := a.cfg.clusterSecrets()
	if err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	tcfg.HttpRequestDirector = announce.Director(secrets[0], a.identity.Name)
	tcfg.DataDir = a.cfg.Cache.Dir // unused: every torrent brings its own storage
	tcfg.DefaultStorage = noDefaultStorage{}
	tcfg.MaxUnverifiedBytes = 512 << 20
	tcfg.PieceHashersPerTorrent = 2
	tcfg.EstablishedConnsPerTorrent = 100
	tcfg.DialRateLimiter = rate.NewLimiter(100, 100)
	// A request moved to another peer before its holder could answer is
	// sent twice; on shaped links the holder needs a while.
	tcfg.StealRequestGrace = 500 * time.Millisecond
	if n := a.cfg.P2P.UploadBytesPerSec; n > 0 {
		tcfg.UploadRateLimiter = rate.NewLimiter(rate.Limit(n), 0) // burst defaulted by the client
	}
	if n := a.cfg.P2P.DownloadBytesPerSec; n > 0 {
		tcfg.DownloadRateLimiter = rate.NewLimiter(rate.Limit(n), 0)
	}
	// The torrent library logs through slog; keep only warnings so a busy
	// node's log stays readable.
	tcfg.Slogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	// Nodes fetch the registry's share of a blob over HTTP Range requests
	// (internal/sched): a connection to the registry's seeder would
	// compete with the nodes for every piece.
	tcfg.Callbacks.PeerConnAdded = append(tcfg.Callbacks.PeerConnAdded, func(pc *torrent.PeerConn) {
		if peerid.IsOrigin(pc.PeerID) {
			if s, ok := a.swarms.Load(pc.Torrent().InfoHash()); ok {
				sd := s.(*swarmDownload)
				sd.mu.Lock()
				sd.originSeen = true
				sd.mu.Unlock()
				sd.poke()
			}
			go pc.Close()
			return
		}
		pc.LocalLtepProtocolMap.AddUserProtocol(shoalExtension)
		// A node turned up: shares change.
		if s, ok := a.swarms.Load(pc.Torrent().InfoHash()); ok {
			s.(*swarmDownload).poke()
		}
	})
	tcfg.Callbacks.PeerClosed = append(tcfg.Callbacks.PeerClosed, func(p *torrent.Peer) {
		if pc, ok := p.TryAsPeerConn(); ok {
			a.peerPorts.Delete(pc)
		}
	})
	tcfg.Callbacks.ReadExtendedHandshake = func(pc *torrent.PeerConn, _ *pp.ExtendedHandshakeMessage) {
		// The handshake is being handled under the connection's lock:
		// greet once it is done.
		go a.greet(pc)
	}
	tcfg.Callbacks.PeerConnReadExtensionMessage = append(tcfg.Callbacks.PeerConnReadExtensionMessage, func(ev torrent.PeerConnReadExtensionMessageEvent) {
		name, _, err := ev.PeerConn.LocalLtepProtocolMap.LookupId(ev.ExtensionNumber)
		if err != nil || name != shoalExtension {
			return
		}
		op, pieces, port, err := decodeExtension(ev.Payload)
		if err != nil {
			a.log.WithError(err).WithField("peer", ev.PeerConn.RemoteAddr).Debug("ignoring extension message")
			return
		}
		if op == opData || op == opDataAsk {
			a.peerPorts.Store(ev.PeerConn, port)
			if op == opDataAsk {
				go a.tellDataPort(ev.PeerConn, opData)
			}
		} else if s, ok := a.swarms.Load(ev.PeerConn.Torrent().InfoHash()); ok {
			s.(*swarmDownload).receivedClaims(ev.PeerConn.PeerID, op, pieces)
			return
		}
		if s, ok := a.swarms.Load(ev.PeerConn.Torrent().InfoHash()); ok {
			s.(*swarmDownload).poke()
		}
	})
	dataAddr := a.cfg.P2P.DataListen
	if dataAddr == "" {
		host, _, _ := net.SplitHostPort(a.cfg.P2P.Listen)
		dataAddr = net.JoinHostPort(host, "0")
	}
	dl, err := net.Listen("tcp", dataAddr)
	if err != nil {
		return fmt.Errorf("agent data listen %s: %w", dataAddr, err)
	}
	// Members only, like the peer wire: a request without a certificate
	// of this cluster ends in the TLS handshake.
	dtls := a.authority.ServerTLS(a.identity)
	// Bulk transfers: full-size records from the first byte.
	dtls.DynamicRecordSizingDisabled = true
	dl = tls.NewListener(dl, dtls)
	tc, err := torrent.NewClient(tcfg)
	if err != nil {
		dl.Close()
		return fmt.Errorf("start bittorrent client: %w", err)
	}
	wire, err := peerwire.Attach(tc, wireNet, a.cfg.P2P.Listen, a.authority, a.identity)
	if err != nil {
		tc.Close()
		dl.Close()
		return fmt.Errorf("agent: %w", err)
	}
	a.tc, a.wire, a.dataL = tc, wire, dl
	a.log.WithFields(logrus.Fields{"peer": wire.Addr().String(), "data": dl.Addr().String()}).Info("bittorrent client listening (cluster TLS)")
	return nil
}

// greet tells a node that has just connected where this one serves pieces,
// and replays this node's claims on the blob.
func (a *Agent) greet(pc *torrent.PeerConn) {
	a.tellDataPort(pc, opData)
	if s, ok := a.swarms.Load(pc.Torrent().InfoHash()); ok {
		s.(*swarmDownload).greet(pc)
	}
}

// tellDataPort sends this node's data port to a connected node. A node
// that still does not hear it asks again (opDataAsk) when it wants our
// pieces.
func (a *Agent) tellDataPort(pc *torrent.PeerConn, op byte) {
	sendExtension(pc, encodeDataPort(op, a.dataL.Addr().(*net.TCPAddr).Port))
}

// sendExtension sends a shoalExtension message, retrying for up to a
// second while the peer's extension IDs are not recorded yet.
func sendExtension(pc *torrent.PeerConn, msg []byte) {
	for range 50 {
		if pc.WriteExtendedMessage(shoalExtension, msg) == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PeerPort is the BitTorrent listen port (0 without P2P).
func (a *Agent) PeerPort() int {
	if a.tc == nil {
		return 0
	}
	return a.tc.LocalPort()
}

// Serve serves the mirror on l, the agent's main listener, and opens the
// secondary listeners its config names (control, metrics, debug; the data
// listener was opened by New), until ctx ends or one of them fails. It
// closes the agent on return.
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
	if a.dataL != nil {
		ls = append(ls, listener{"data", a.dataServer(), a.dataL})
	}
	g, gctx := errgroup.WithContext(ctx)
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
	a.closeOnce.Do(func() {
		a.cancel()
		if a.tc != nil {
			a.tc.Close()
			a.wire.Close()
			a.dataL.Close()
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

// upstreamByURL finds a configured upstream for a control-API registry URL
// (to use its static credentials).
func (a *Agent) upstreamByURL(u string) *Upstream {
	want, ok := normURL(u)
	if !ok {
		return nil
	}
	for i := range a.cfg.Upstreams {
		if have, ok := normURL(a.cfg.Upstreams[i].URL); ok && have == want {
			return &a.cfg.Upstreams[i]
		}
	}
	return nil
}

// normURL is a registry URL in a form two spellings of one registry share:
// scheme and host in lower case, no trailing slash. Anything but a plain
// http(s)://host[:port][/path] is not a registry URL.
func normURL(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + strings.TrimRight(u.EscapedPath(), "/"), true
}

func basicAuth(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// checkAccess asks the upstream (HEAD) whether this client's credentials may
// read the blob in this repository, before a cached or in-flight copy is
// served or a download starts, and returns the size it gave (-1 if none).
// Positive answers are reused for cfg.Cache.AuthTTL. A negative answer comes
// back as the upstream's response, to be relayed to the client unchanged.
func (a *Agent) checkAccess(ctx context.Context, base, repo, hexd, auth string) (int64, error) {
	sum := sha256.Sum256([]byte(auth))
	key := hex.EncodeToString(sum[:]) + "|" + base + "|" + repo + "|" + hexd
	a.authMu.Lock()
	ok, hit := a.authCache[key]
	a.authMu.Unlock()
	if hit && time.Now().Before(ok.until) {
		return ok.size, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, blobURL(base, repo, hexd), nil)
	if err != nil {
		return 0, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := a.plain.Do(req)
	if err != nil {
		return 0, fmt.Errorf("upstream access check: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, &upstreamError{status: resp.StatusCode, header: resp.Header}
	}
	size := resp.ContentLength
	a.authMu.Lock()
	if len(a.authCache) > 10000 { // bounded: drop everything rather than track ages
		a.authCache = map[string]accessOK{}
	}
	a.authCache[key] = accessOK{until: time.Now().Add(a.cfg.Cache.AuthTTL), size: size}
	a.authMu.Unlock()
	return size, nil
}

// accessOK is a remembered positive access check.
type accessOK struct {
	until time.Time
	size  int64 // -1: the upstream gave none
}

func blobURL(base, repo, hexd string) string {
	return base + "/v2/" + repo + "/blobs/sha256:" + hexd
}

// upstreamError is a non-success answer from the upstream registry that the
// client should see as-is (401 with WWW-Authenticate, 403, 404...).
type upstreamError struct {
	status int
	header http.Header
	body   []byte
}

func (e *upstreamError) Error() string {
	return fmt.Sprintf("upstream answered %d", e.status)
}

// dropSeed stops seeding a blob (evicted, seed time over, or re-downloaded).
func (a *Agent) dropSeed(hexd string) {
	a.mu.Lock()
	s, ok := a.seeds[hexd]
	delete(a.seeds, hexd)
	a.mu.Unlock()
	if ok {
		s.timer.Stop()
		s.t.Drop()
	}
}

func (a *Agent) keepSeeding(hexd string, t *torrent.Torrent, d time.Duration) {
	a.dropSeed(hexd)
	s := &seed{t: t}
	s.timer = time.AfterFunc(d, func() {
		a.mu.Lock()
		cur, ok := a.seeds[hexd]
		if ok && cur == s {
			delete(a.seeds, hexd)
		}
		a.mu.Unlock()
		if ok && cur == s {
			t.Drop()
		}
	})
	a.mu.Lock()
	a.seeds[hexd] = s
	a.mu.Unlock()
}

func (a *Agent) activeTorrents() int {
	if a.tc == nil {
		return 0
	}
	return len(a.tc.Torrents())
}

// uploadedBytes only grows: the client's counter and servedBytes both do.
func (a *Agent) uploadedBytes() int64 {
	if a.tc == nil {
		return 0
	}
	st := a.tc.Stats()
	return st.BytesWrittenData.Int64() + int64(a.servedBytes.Load())
}
