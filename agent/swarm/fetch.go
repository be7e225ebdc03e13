package swarm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/shoalproject/shoal/agent/sched"
)

// idleReadTimeout ends a request that delivers no whole piece for this long
// (a hung node or registry must not hold pieces forever); requests have no
// overall limit, since a lone node's runs grow to 64 pieces.
const idleReadTimeout = 30 * time.Second

// ErrPeerIdle marks a request to a node that delivered no whole piece for
// idleReadTimeout.
var ErrPeerIdle = errors.New("node delivered no piece in time")

// StatusError is an unexpected HTTP answer to a Range request.
type StatusError struct {
	Status int
	What   string
}

func (e *StatusError) Error() string { return e.What }

// RangeBody checks that resp answers a request for bytes [off, off+n) of a
// blob of total bytes and returns its body; otherwise it closes the body
// and says what is wrong (a *StatusError for an unexpected status).
func RangeBody(resp *http.Response, off, n, total int64) (io.ReadCloser, error) {
	if resp.StatusCode != http.StatusPartialContent {
		drain(resp.Body)
		return nil, &StatusError{Status: resp.StatusCode, What: "Range request answered " + resp.Status}
	}
	if want := fmt.Sprintf("bytes %d-%d/%d", off, off+n-1, total); resp.Header.Get("Content-Range") != want {
		resp.Body.Close()
		return nil, fmt.Errorf("Content-Range %q, want %q", resp.Header.Get("Content-Range"), want)
	}
	return resp.Body, nil
}

// errorDrain bounds what is read of an error answer before its body is
// closed.
const errorDrain = 16 << 10

// drain reads a short error answer to its end before closing it. Go's
// transport keeps a connection only when its last body was read to EOF;
// closing a "busy" answer unread closed the connection, and the next
// request to that node paid a mutual-TLS handshake. Busy answers are the
// common case at scale (a node has four upload slots and tens of
// requesters): at N = 16 handshakes were a third of an agent's CPU.
func drain(body io.ReadCloser) {
	_, _ = io.CopyN(io.Discard, body, errorDrain)
	body.Close()
}

// fetchPeer asks a node for a run of pieces; check: each is checked
// against its SHA-1 before it is written.
func (e *Engine) fetchPeer(ctx context.Context, f sched.Fetch, check bool) (badPeer bool, err error) {
	open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		return e.deps.Peers.ReadRange(ctx, f.Peer, off, n)
	}
	return e.fetchRun(ctx, f, open, true, check)
}

// fetchOrigin takes a run of pieces from the registry. The bytes are not
// SHA-1-checked here: they come from the same registry as the torrent's
// hashes, the blob's sha256 is checked before anything is released, and
// nodes check every piece they get from us.
// Pieces a reader waits for are the exception: they go out before the
// digest can vouch for them, so they are checked like a node's.
func (e *Engine) fetchOrigin(ctx context.Context, f sched.Fetch) error {
	ctx = context.WithValue(ctx, whyKey{}, f.Why)
	open := func(ctx context.Context, off, n int64) (io.ReadCloser, error) {
		body, err := e.deps.Origin.ReadRange(ctx, off, n)
		if err != nil {
			return nil, err
		}
		return countingBody{ReadCloser: body, n: &e.originBytes}, nil
	}
	_, err := e.fetchRun(ctx, f, open, false, f.Why == "range")
	return err
}

type whyKey struct{}

// FetchWhy is why the registry fetch ctx belongs to was planned
// (sched.Fetch.Why), for the Origin: a "share" fetch may be refused by
// the registry with regshare.StatusTaken (another node fetched that
// range a moment ago), and the engine then leaves the pieces to the
// swarm for regshare.Hold.
func FetchWhy(ctx context.Context) string {
	why, _ := ctx.Value(whyKey{}).(string)
	return why
}

// MarkedShare reports whether the registry fetch ctx belongs to carries
// regshare.Header, so that the registry may refuse it when another node
// fetched the range within regshare.Hold: a node's share, and a steal. A
// steal is a guess made from this node's neighbourhood only; in a big
// swarm (50 connections among 1,000 nodes) neighbourhoods idle while the
// swarm is fine, and unmarked steals sent ~9 extra images from the
// registry in tools/sim's N = 1,000 × 1 GiB projection. Fetches of a
// stalled node (solo), a lone node and a waiting reader (range) are never
// marked: the refusal must not hold back a node the stall rule lets go.
func MarkedShare(ctx context.Context) bool {
	switch FetchWhy(ctx) {
	case "share", "steal":
		return true
	}
	return false
}

type opener func(ctx context.Context, off, n int64) (io.ReadCloser, error)

func (e *Engine) fetchRun(ctx context.Context, f sched.Fetch, open opener, fromPeer, check bool) (badPeer bool, err error) {
	lay := e.cfg.Layout
	from, _ := lay.Piece(f.First)
	lastOff, lastLen := lay.Piece(f.First + f.Count - 1)
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Ends the request when no piece arrives for a while; reset per piece.
	var idle atomic.Bool
	watchdog := e.deps.Clock.AfterFunc(idleReadTimeout, func() { idle.Store(true); cancel() })
	defer watchdog.Stop()
	defer func() {
		if err != nil && idle.Load() && fromPeer {
			// A node that cannot finish a piece in idleReadTimeout is
			// not asked again.
			err = fmt.Errorf("%w: %w", ErrPeerIdle, err)
		}
	}()
	body, err := open(ctx, from, lastOff+lastLen-from)
	if err != nil {
		return false, fmt.Errorf("pieces %d+%d: %w", f.First, f.Count, err)
	}
	defer body.Close()
	for i := f.First; i < f.First+f.Count; i++ {
		bad, err := e.readPiece(ctx, f, i, body, fromPeer, check)
		if err != nil {
			return bad, err
		}
		watchdog.Reset(idleReadTimeout)
	}
	return false, nil
}

// readPiece reads piece i from body and writes it to the blob.
func (e *Engine) readPiece(ctx context.Context, f sched.Fetch, i int, body io.Reader, fromPeer, check bool) (badPeer bool, err error) {
	lay := e.cfg.Layout
	_, n := lay.Piece(i)
	// A buffer per piece, lent to the blob's hasher once written.
	buf := getPieceBuf(lay.PieceLength)
	b := buf[:n]
	if e.deps.Throttle != nil {
		if err := e.deps.Throttle(ctx, len(b)); err != nil {
			putPieceBuf(buf)
			return false, err
		}
	}
	k, err := io.ReadFull(body, b)
	if err != nil {
		putPieceBuf(buf)
		if fromPeer {
			e.deps.Metrics.PeerBytes(k, 0)
		}
		return false, fmt.Errorf("piece %d: %w", i, err)
	}
	if check && !lay.Check(i, b) {
		putPieceBuf(buf)
		if fromPeer {
			e.deps.Metrics.PeerBytes(k, 0)
		}
		return fromPeer, fmt.Errorf("piece %d failed its SHA-1 check", i)
	}
	done := func() { putPieceBuf(buf) }
	if vw, ok := e.deps.Blob.(VerifiedWriter); ok && check {
		err = vw.WritePieceVerifiedLent(i, b, done)
	} else {
		err = e.deps.Blob.WritePieceLent(i, b, !fromPeer || check, done)
	}
	if err != nil {
		return false, err
	}
	if fromPeer {
		e.deps.Metrics.PeerBytes(k, k)
		e.fromPeers.Add(int64(k))
	} else {
		e.deps.Metrics.RegistryBytes(f.Why, k)
		e.fromRegistry.Add(int64(k))
	}
	e.deps.Peers.Arrived(i)
	e.poke()
	return false, nil
}

// Piece buffers are reused across requests: a fresh megabyte per request
// is garbage the collector hands back to the kernel, and the next one is
// faulted in again page by page.
var pieceBufs sync.Map // piece length → *sync.Pool

func getPieceBuf(n int64) []byte {
	p, _ := pieceBufs.LoadOrStore(n, &sync.Pool{New: func() any { return make([]byte, n) }})
	return p.(*sync.Pool).Get().([]byte)
}

func putPieceBuf(b []byte) {
	if p, ok := pieceBufs.Load(int64(len(b))); ok {
		p.(*sync.Pool).Put(b)
	}
}

// countingBody adds what it reads to n.
type countingBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (c countingBody) Read(p []byte) (int, error) {
	k, err := c.ReadCloser.Read(p)
	c.n.Add(int64(k))
	return k, err
}
