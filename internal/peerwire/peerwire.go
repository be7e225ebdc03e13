// Package peerwire closes anacrolix/torrent's peer wire to cluster members.
//
// A BitTorrent handshake proves only that the caller knows an infohash, and
// infohashes leak: they are in every .torrent, in logs, on the tracker's
// wire. So a Shoal client opens no socket of its own (TCP, uTP and DHT off)
// and is given one listener and one dialer instead, both speaking mutual
// TLS 1.3 with certificates of the cluster's authority (internal/cluster).
// A connection whose other end holds no certificate of this cluster fails
// in the TLS handshake, before any BitTorrent byte, in both directions: the
// bytes are encrypted and only holders of the join secret are served.
//
// The listener's port is the client's first listener's, so it is what the
// client announces to the tracker and in BEP 10 handshakes, and what other
// members dial.
package peerwire

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"

	"github.com/anacrolix/torrent"

	"github.com/shoalproject/shoal/internal/cluster"
)

// Configure turns off every socket the client would open by itself: a plain
// TCP or uTP listener would accept anyone. Attach provides the only ones.
func Configure(cfg *torrent.ClientConfig) {
	cfg.DisableTCP = true
	cfg.DisableUTP = true
	cfg.NoDHT = true
	cfg.NoDefaultPortForwarding = true
	cfg.DisableWebtorrent = true
	// Obfuscation (MSE) inside TLS would only cost CPU.
	cfg.HeaderObfuscationPolicy = torrent.HeaderObfuscationPolicy{}
}

// ClientConfig is the configuration every Shoal client starts from (the
// agents' and the registry's seeder): Configure's closed wire, seeding
// whatever the ratio, no web seeds (nodes fetch registry bytes over HTTP on
// their own terms), room for pipelined requests on LAN links, and the
// address families listen names. advertise, if not nil, is the address
// announced instead of the one trackers see. network is Attach's.
func ClientConfig(listen string, advertise net.IP) (cfg *torrent.ClientConfig, network string) {
	cfg = torrent.NewDefaultClientConfig()
	Configure(cfg)
	cfg.Seed = true
	cfg.DisableWebseeds = true
	cfg.MaxAllocPeerRequestDataPerConn = 16 << 20
	network, cfg.DisableIPv4, cfg.DisableIPv6 = families(listen)
	if ip4 := advertise.To4(); ip4 != nil {
		cfg.PublicIp4 = ip4
	} else if advertise != nil {
		cfg.PublicIp6 = advertise
	}
	return cfg, network
}

// families decides the address families of a client listening on listen
// (host:port). anacrolix hands out and dials peers of both families, but a
// listener on a literal address of one family is reachable on that family
// only: peers of the other could not dial back, so they are turned off
// (0.0.0.0 included, the usual LAN case). A name or an empty host listens
// on, and dials, both.
func families(listen string) (network string, disable4, disable6 bool) {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return "tcp", false, false // Attach's listen reports the bad address
	}
	ip, err := netip.ParseAddr(host)
	switch {
	case err != nil:
		return "tcp", false, false
	case ip.Unmap().Is4():
		return "tcp4", false, true
	default:
		return "tcp6", true, false
	}
}

// Wire is the listener and dialer one client uses.
type Wire struct {
	l net.Listener
}

// Attach listens on addr (network "tcp", "tcp4" or "tcp6") and makes it the
// client's listener and its dialer the only one. The client must have been
// configured with Configure. Close the Wire after the client.
func Attach(cl *torrent.Client, network, addr string, a *cluster.Authority, id *cluster.Identity) (*Wire, error) {
	if a == nil || id == nil {
		return nil, errors.New("peerwire: a cluster authority and identity are required")
	}
	if n := len(cl.Listeners()); n != 0 {
		return nil, fmt.Errorf("peerwire: the client already has %d listener(s) of its own; call Configure before NewClient", n)
	}
	lc := net.ListenConfig{KeepAlive: -1} // BitTorrent has keep-alives of its own
	tl, err := lc.Listen(context.Background(), network, addr)
	if err != nil {
		return nil, fmt.Errorf("peer wire listen %s: %w", addr, err)
	}
	// tls.NewListener does not handshake in Accept: the handshake runs on
	// the first read, in the connection's own goroutine and under the
	// deadline anacrolix sets for its handshakes, so a silent caller holds
	// neither the accept loop nor a connection for long.
	w := &Wire{l: tls.NewListener(tl, a.ServerTLS(id))}
	cl.AddListener(w.l)
	cl.AddDialer(dialer{network: network, tls: a.ClientTLS(id, nil)})
	return w, nil
}

// Addr is the listening address.
func (w *Wire) Addr() net.Addr { return w.l.Addr() }

// Port is the listening port, the one peers dial.
func (w *Wire) Port() int { return w.l.Addr().(*net.TCPAddr).Port }

// Close stops listening (anacrolix leaves added listeners to their owner).
func (w *Wire) Close() error { return w.l.Close() }

// dialer is the client's only way out: TCP, then the TLS handshake within
// the dial's context (anacrolix bounds it with HandshakesTimeout), so a
// connection counts as made only once the other end proved membership.
type dialer struct {
	network string
	tls     *tls.Config
}

func (d dialer) DialerNetwork() string { return d.network }

func (d dialer) Dial(ctx context.Context, addr string) (net.Conn, error) {
	nd := net.Dialer{KeepAlive: -1, FallbackDelay: -1}
	c, err := nd.DialContext(ctx, d.network, addr)
	if err != nil {
		return nil, err
	}
	tc := tls.Client(c, d.tls)
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("peer wire TLS with %s: %w", addr, err)
	}
	return tc, nil
}
