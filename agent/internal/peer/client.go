// Package peer is the node's side of the swarm: the BitTorrent client
// (anacrolix, over peerwire's mutual TLS) that keeps membership and piece
// availability, the Shoal extension its nodes speak (claims, data ports),
// the data path that moves piece bytes between nodes over HTTPS Range
// requests, and Swarm, one torrent's swarm as the download engine sees it.
package peer

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/shoalproject/shoal/agent/internal/store"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/peerid"
	"github.com/shoalproject/shoal/internal/peerwire"
)

// Config is what the client is built from.
type Config struct {
	// Listen is the BitTorrent address; AdvertiseIP the IPv4 peers
	// should dial, if not the one the tracker sees; DataListen the data
	// path's address (empty: Listen's host, any port).
	Listen, AdvertiseIP, DataListen string
	// UploadSlots bounds the data path's concurrent uploads.
	UploadSlots int
	// Rate limits in bytes/s; 0 is unlimited.
	UploadBytesPerSec, DownloadBytesPerSec int64
	Authority                              *cluster.Authority
	Identity                               *cluster.Identity
	// Readers are the node's open blobs, which the data path serves.
	Readers *store.Readers
	// Transport is the base of the data path's client (cloned).
	Transport *http.Transport
	// SignAnnounce signs each tracker announce as this member's (the
	// tracker hands out members only); nil sends them unsigned.
	SignAnnounce func(*http.Request) error
	Log          *logrus.Entry
}

// Client is the node's BitTorrent client and data path. New opens
// nothing; Start opens the listeners; Close releases them.
type Client struct {
	cfg        Config
	tc         *torrent.Client // nil until Start
	wire       *peerwire.Wire
	dataL      net.Listener
	http       *http.Client // to other nodes' data listeners
	uploadRate *rate.Limiter
	slots      chan struct{} // the data path's uploads in progress
	// ports are the data ports other nodes told us, per connection (every
	// connection greets), forgotten when it closes: a peer making
	// connections under fresh IDs must not grow the map.
	ports  sync.Map // *torrent.PeerConn → int
	swarms sync.Map // metainfo.Hash → *Swarm, the torrents downloading now
	served atomic.Int64
	stats  dataStats
}

// New builds a client from cfg; nothing listens yet.
func New(cfg Config) *Client {
	c := &Client{cfg: cfg, slots: make(chan struct{}, max(cfg.UploadSlots, 1))}
	if cfg.UploadBytesPerSec > 0 {
		c.uploadRate = rate.NewLimiter(rate.Limit(cfg.UploadBytesPerSec), 1<<20)
	}
	ptr := cfg.Transport.Clone()
	// Nodes' data listeners are on the LAN: never through a proxy, and
	// idle connections to many nodes are cheap to keep.
	ptr.Proxy = nil
	ptr.MaxIdleConnsPerHost = 8
	ptr.DisableCompression = true
	// Data listeners serve members only: present this node's certificate
	// and accept any member's. HTTP/1.1: one bulk range per connection,
	// no multiplexing to pay for.
	ptr.TLSClientConfig = cfg.Authority.ClientTLS(cfg.Identity, nil)
	ptr.ForceAttemptHTTP2 = false
	ptr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	c.http = &http.Client{Transport: ptr, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	return c
}

// Start opens the data listener and starts the BitTorrent client on the
// peer wire.
func (c *Client) Start() error {
	dataAddr := c.cfg.DataListen
	if dataAddr == "" {
		host, _, _ := net.SplitHostPort(c.cfg.Listen)
		dataAddr = net.JoinHostPort(host, "0")
	}
	dl, err := net.Listen("tcp", dataAddr)
	if err != nil {
		return fmt.Errorf("agent data listen %s: %w", dataAddr, err)
	}
	dl = sendBufferListener{Listener: dl, n: &c.stats.conns}
	// Members only, like the peer wire: a request without a certificate
	// of this cluster ends in the TLS handshake.
	dtls := c.cfg.Authority.ServerTLS(c.cfg.Identity)
	// Bulk transfers: full-size records from the first byte.
	dtls.DynamicRecordSizingDisabled = true
	dl = tls.NewListener(dl, dtls)
	tcfg, wireNet := c.torrentConfig()
	tc, err := torrent.NewClient(tcfg)
	if err != nil {
		dl.Close()
		return fmt.Errorf("start bittorrent client: %w", err)
	}
	wire, err := peerwire.Attach(tc, wireNet, c.cfg.Listen, c.cfg.Authority, c.cfg.Identity)
	if err != nil {
		tc.Close()
		dl.Close()
		return fmt.Errorf("agent: %w", err)
	}
	c.tc, c.wire, c.dataL = tc, wire, dl
	c.cfg.Log.WithFields(logrus.Fields{"peer": wire.Addr().String(), "data": dl.Addr().String()}).Info("bittorrent client listening (cluster TLS)")
	return nil
}

// torrentConfig is anacrolix's configuration: no socket of its own (uTP
// also because go-utp is a stub in this build), the peer wire is
// peerwire's mutual TLS, members only.
func (c *Client) torrentConfig() (*torrent.ClientConfig, string) {
	tcfg, wireNet := peerwire.ClientConfig(c.cfg.Listen, net.ParseIP(c.cfg.AdvertiseIP))
	tcfg.PeerID = peerid.New(peerid.NodePrefix)
	tcfg.HttpRequestDirector = c.cfg.SignAnnounce
	tcfg.DataDir = os.TempDir() // unused: every torrent brings its own storage
	tcfg.DefaultStorage = store.NoDefault{}
	tcfg.MaxUnverifiedBytes = 512 << 20
	tcfg.PieceHashersPerTorrent = 2
	tcfg.EstablishedConnsPerTorrent = MaxConnsPerTorrent
	tcfg.DialRateLimiter = rate.NewLimiter(100, 100)
	// A request moved to another peer before its holder could answer is
	// sent twice; on shaped links the holder needs a while.
	tcfg.StealRequestGrace = 500 * time.Millisecond
	if n := c.cfg.UploadBytesPerSec; n > 0 {
		tcfg.UploadRateLimiter = rate.NewLimiter(rate.Limit(n), 0) // burst defaulted by the client
	}
	if n := c.cfg.DownloadBytesPerSec; n > 0 {
		tcfg.DownloadRateLimiter = rate.NewLimiter(rate.Limit(n), 0)
	}
	// The torrent library logs through slog; keep only warnings so a busy
	// node's log stays readable.
	tcfg.Slogger = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	tcfg.Callbacks.PeerConnAdded = append(tcfg.Callbacks.PeerConnAdded, c.peerConnAdded)
	tcfg.Callbacks.PeerClosed = append(tcfg.Callbacks.PeerClosed, func(p *torrent.Peer) {
		if pc, ok := p.TryAsPeerConn(); ok {
			c.ports.Delete(pc)
			// A connection closed before its handshake has no torrent.
			if t := pc.Torrent(); t != nil {
				if s := c.swarm(t.InfoHash()); s != nil {
					s.forget(pc)
				}
			}
		}
	})
	// A message that changes what a node has invalidates the copy of its
	// pieces the swarm keeps (Swarm.Nodes). Called under the client's
	// lock, before the message is applied; Nodes copies under that lock
	// too, so a copy made after this call includes the message.
	tcfg.Callbacks.ReadMessage = func(pc *torrent.PeerConn, m *pp.Message) {
		switch m.Type {
		case pp.Have, pp.Bitfield, pp.HaveAll, pp.HaveNone:
			if t := pc.Torrent(); t != nil {
				if s := c.swarm(t.InfoHash()); s != nil {
					s.changedPieces(pc)
				}
			}
		}
	}
	tcfg.Callbacks.ReadExtendedHandshake = func(pc *torrent.PeerConn, _ *pp.ExtendedHandshakeMessage) {
		// The handshake is being handled under the connection's lock:
		// greet once it is done.
		go c.greet(pc)
	}
	tcfg.Callbacks.PeerConnReadExtensionMessage = append(tcfg.Callbacks.PeerConnReadExtensionMessage, c.readExtension)
	return tcfg, wireNet
}

// peerConnAdded: nodes fetch the registry's share of a blob over HTTP
// Range requests (agent/sched), so a connection to the registry's seeder
// would compete with the nodes for every piece; it only tells that the
// tracker answered.
func (c *Client) peerConnAdded(pc *torrent.PeerConn) {
	s := c.swarm(pc.Torrent().InfoHash())
	if peerid.IsOrigin(pc.PeerID) {
		if s != nil {
			s.sawOrigin()
		}
		go pc.Close()
		return
	}
	pc.LocalLtepProtocolMap.AddUserProtocol(shoalExtension)
	if s != nil {
		s.poke() // a node turned up: shares change
	}
}

func (c *Client) readExtension(ev torrent.PeerConnReadExtensionMessageEvent) {
	name, _, err := ev.PeerConn.LocalLtepProtocolMap.LookupId(ev.ExtensionNumber)
	if err != nil || name != shoalExtension {
		return
	}
	op, pieces, port, err := decodeExtension(ev.Payload)
	if err != nil {
		c.cfg.Log.WithError(err).WithField("peer", ev.PeerConn.RemoteAddr).Debug("ignoring extension message")
		return
	}
	s := c.swarm(ev.PeerConn.Torrent().InfoHash())
	switch {
	case op == opData || op == opDataAsk:
		c.ports.Store(ev.PeerConn, port)
		if op == opDataAsk {
			go c.tellDataPort(ev.PeerConn, opData)
		}
		if s != nil {
			s.poke()
		}
	case s != nil:
		s.receivedClaims(ev.PeerConn.PeerID, op, pieces)
	}
}

func (c *Client) swarm(ih metainfo.Hash) *Swarm {
	if s, ok := c.swarms.Load(ih); ok {
		return s.(*Swarm)
	}
	return nil
}

// greet tells a node that has just connected where this one serves pieces,
// and replays this node's claims on the blob.
func (c *Client) greet(pc *torrent.PeerConn) {
	c.tellDataPort(pc, opData)
	if s := c.swarm(pc.Torrent().InfoHash()); s != nil {
		s.greet(pc)
	}
}

// tellDataPort sends this node's data port to a connected node. A node
// that still does not hear it asks again (opDataAsk) when it wants our
// pieces.
func (c *Client) tellDataPort(pc *torrent.PeerConn, op byte) {
	SendExtension(pc, encodeDataPort(op, c.dataL.Addr().(*net.TCPAddr).Port))
}

// Add adds a torrent (its storage set by the caller).
func (c *Client) Add(spec *torrent.TorrentSpec) (*torrent.Torrent, error) {
	if c.tc == nil {
		return nil, errors.New("bittorrent client not started")
	}
	t, _, err := c.tc.AddTorrentSpec(spec)
	return t, err
}

// Busy reports whether the torrent is downloading now.
func (c *Client) Busy(ih metainfo.Hash) bool { return c.swarm(ih) != nil }

// Join makes t's swarm, for a download of a blob of length bytes in
// pieces pieces; leave ends it.
func (c *Client) Join(t *torrent.Torrent, length int64, pieces int) (s *Swarm, leave func()) {
	s = newSwarm(c, t, length, pieces)
	c.swarms.Store(t.InfoHash(), s)
	return s, func() { c.swarms.CompareAndDelete(t.InfoHash(), s) }
}

// Port is the BitTorrent listen port (0 before Start).
func (c *Client) Port() int {
	if c.tc == nil {
		return 0
	}
	return c.tc.LocalPort()
}

// DataAddr is the data listener's address (nil before Start).
func (c *Client) DataAddr() net.Addr {
	if c.dataL == nil {
		return nil
	}
	return c.dataL.Addr()
}

// ActiveTorrents counts the torrents downloading or seeding.
func (c *Client) ActiveTorrents() int {
	if c.tc == nil {
		return 0
	}
	return len(c.tc.Torrents())
}

// UploadedBytes only grows: the client's counter and the data path's both
// do.
func (c *Client) UploadedBytes() int64 {
	if c.tc == nil {
		return 0
	}
	st := c.tc.Stats()
	return st.BytesWrittenData.Int64() + c.served.Load()
}

// Check reports a client that has stopped: the node then neither gets
// pieces from nor gives them to the others.
func (c *Client) Check(context.Context) error {
	if c.tc == nil {
		return errors.New("bittorrent client not started")
	}
	select {
	case <-c.tc.Closed():
		return errors.New("bittorrent client closed")
	default:
		return nil
	}
}

// Close stops the client and its listeners.
func (c *Client) Close() {
	if c.tc != nil {
		c.tc.Close()
		c.wire.Close()
		c.dataL.Close()
	}
}

// Torrents is the anacrolix client itself (nil before Start), for what
// the node does with torrents beyond this package: dropping a seed, a test
// stopping it under a running agent.
func (c *Client) Torrents() *torrent.Client { return c.tc }
