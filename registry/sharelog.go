package registry

import (
	"context"
	"net"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/internal/regshare"
)

// errorCodeShareTaken answers a share fetch of a range another node
// fetched within regshare.Hold, in the OCI error envelope.
var errorCodeShareTaken = errcode.Register("shoal", errcode.ErrorDescriptor{
	Value:          "SHARE_TAKEN",
	Message:        "another node fetched this range from the registry a moment ago; get it from the swarm",
	Description:    "A node's share fetch (" + regshare.Header + " header) of a range another node fetched as its share within the hold time.",
	HTTPStatusCode: regshare.StatusTaken,
})

// shareLogMax bounds the share log: beyond it, share fetches are served
// without looking (the log never grows with a flood of ranges).
const shareLogMax = 1 << 16

// shareLog remembers which node fetched which range of a blob as its
// share, for regshare.Hold, so that a second owner of the same block is
// refused (regshare).
type shareLog struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[shareKey]shareEntry
	// pruned is when expired entries were last dropped.
	pruned time.Time
}

type shareKey struct {
	dgst  digest.Digest
	start int64
}

type shareEntry struct {
	host string
	at   time.Time
}

func newShareLog(now func() time.Time) *shareLog {
	return &shareLog{now: now, m: map[shareKey]shareEntry{}}
}

// take records that remote (host:port) fetches the range of dgst starting
// at start, and reports false when another host did so within
// regshare.Hold. The same host asking again (a retry) is served.
func (l *shareLog) take(dgst digest.Digest, start int64, remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	now := l.now()
	k := shareKey{dgst, start}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.m[k]; ok && e.host != host && now.Sub(e.at) < regshare.Hold {
		return false
	}
	if now.Sub(l.pruned) >= time.Second {
		l.pruned = now
		for k, e := range l.m {
			if now.Sub(e.at) >= regshare.Hold {
				delete(l.m, k)
			}
		}
	}
	if len(l.m) < shareLogMax {
		l.m[k] = shareEntry{host, now}
	}
	return true
}

// forget drops a fetch that did not complete: another node may have it.
func (l *shareLog) forget(dgst digest.Digest, start int64, remote string) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.m[shareKey{dgst, start}]; ok && e.host == host {
		delete(l.m, shareKey{dgst, start})
	}
}

// pieceSenders is how many piece-range responses the registry sends at a
// time; the others wait their turn. The registry's uplink shared by every
// node's requests at once (hundreds in a rollout of 24 nodes on 10 Mbit/s:
// owners of every layer, then solo fetches) delivered every piece late and
// together, so no node gained a piece for the stall bound and the swarm
// had nothing to trade; served a few at a time, pieces come out one after
// another and the swarm relays each while the next one is sent (issue
// 20). Four responses of 256 KiB socket buffers fill a 10 Gbit/s LAN.
const pieceSenders = 4

// pieceSendBuffer is the socket send buffer of a connection while it
// sends a piece range (the kernel doubles it): with the autotuned buffer
// (up to 4 MiB) a response is written at once and its turn ends while
// its bytes still wait for the link.
const pieceSendBuffer = 128 << 10

type connKey struct{}

// withConn keeps the connection in its requests' contexts
// (http.Server.ConnContext).
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// sendTurn waits for a turn to send a piece range and returns its end;
// false if the request ended first. The connection's send buffer is made
// small so that the turn lasts until the bytes are nearly delivered.
func (s *Server) sendTurn(ctx context.Context) (func(), bool) {
	select {
	case s.senders <- struct{}{}:
	case <-ctx.Done():
		return nil, false
	}
	c, _ := ctx.Value(connKey{}).(net.Conn)
	if tc, ok := c.(interface{ NetConn() net.Conn }); ok { // TLS
		c = tc.NetConn()
	}
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(pieceSendBuffer) // best effort
	}
	return func() { <-s.senders }, true
}
