// Package utp stands in for github.com/anacrolix/go-utp, which the module
// proxy does not serve. anacrolix/torrent v1.62.0 imports it unconditionally,
// but Shoal always runs with ClientConfig.DisableUTP: on a LAN, TCP is faster
// and uTP's congestion control only gets in the way. Every constructor fails,
// so enabling uTP by mistake is reported at client start instead of silently
// doing something else.
package utp

import (
	"context"
	"errors"
	"log/slog"
	"net"
)

// ErrUnavailable is returned by every constructor.
var ErrUnavailable = errors.New("uTP unavailable: shoal builds without go-utp; set DisableUTP")

// Default names the implementation in the client's status output.
const Default = "utp(unavailable)"

// FirewallCallback matches the upstream type.
type FirewallCallback = func(net.Addr) bool

type options struct{ logger *slog.Logger }

// Option matches the upstream functional option.
type Option func(*options)

// WithLogger matches the upstream option; it has no effect here.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Socket matches the upstream interface.
type Socket interface {
	net.PacketConn
	Accept() (net.Conn, error)
	Addr() net.Addr
	DialContext(ctx context.Context, network, addr string) (net.Conn, error)
	SetFirewallCallback(FirewallCallback)
}

// NewSocket always fails; see the package comment.
func NewSocket(network, addr string, opts ...Option) (Socket, error) { return nil, ErrUnavailable }

// NewSocketFromPacketConn always fails; see the package comment.
func NewSocketFromPacketConn(pc net.PacketConn, opts ...Option) (Socket, error) {
	return nil, ErrUnavailable
}
