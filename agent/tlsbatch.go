package agent

import (
	"context"
	"crypto/tls"
	"net"
	"sync"
)

// Go's crypto/tls hands every record (at most 16 KiB of payload) to the
// connection below it in a write(2) of its own. On the data path, where a
// sending node's work is sealing and writing bulk bytes, those syscalls and
// their trips through the TCP stack were most of the sender's CPU. A
// recordBatcher sits below TLS and, only between Hold and Flush, gathers
// the sealed records into one buffer that goes to the socket in one write.
// Nothing changes above it: the records are the ones TLS sealed, in the
// order it sealed them, and net/http still sees a *tls.Conn (r.TLS, the
// handshake it runs itself).
//
// Bytes sit in the buffer only between a Hold and the Flush of the same
// caller (or until the buffer is full): the handshake happens before any
// handler runs, so it is never held, and a record that TLS writes from its
// read side (an alert) while a hold is on goes out with that hold's Flush,
// in order, which is no later than it would leave behind crypto/tls's own
// write lock.
type recordBatcher struct {
	net.Conn

	mu      sync.Mutex
	holding bool
	buf     *[]byte // from batchBufs while holding, nil otherwise
	err     error   // first write error: the connection is broken for good
}

// batchCap bounds one gathered write: 32 full records plus a response's
// headers, so that a sendSealed step goes out in one write.
const batchCap = 544 << 10

var batchBufs = sync.Pool{New: func() any { b := make([]byte, 0, batchCap); return &b }}

func newRecordBatcher(c net.Conn) *recordBatcher { return &recordBatcher{Conn: c} }

// Hold starts gathering writes until Flush.
func (b *recordBatcher) Hold() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.holding || b.err != nil {
		return
	}
	b.holding = true
	b.buf = batchBufs.Get().(*[]byte)
}

// Flush writes what was gathered since Hold, in one write, and stops
// gathering. It returns the connection's write error, if any.
func (b *recordBatcher) Flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.holding {
		return b.err
	}
	b.holding = false
	b.flushLocked()
	*b.buf = (*b.buf)[:0]
	batchBufs.Put(b.buf)
	b.buf = nil
	return b.err
}

func (b *recordBatcher) flushLocked() {
	if len(*b.buf) > 0 && b.err == nil {
		_, b.err = b.Conn.Write(*b.buf)
	}
	*b.buf = (*b.buf)[:0]
}

// Write is crypto/tls writing records. The lock is held across the socket
// write so that gathered and direct writes leave in the order TLS made them.
func (b *recordBatcher) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err != nil {
		return 0, b.err
	}
	if !b.holding {
		n, err := b.Conn.Write(p)
		b.err = err
		return n, err
	}
	if len(*b.buf)+len(p) > batchCap {
		b.flushLocked()
		if b.err != nil {
			return 0, b.err
		}
	}
	if len(p) >= batchCap {
		n, err := b.Conn.Write(p)
		b.err = err
		return n, err
	}
	*b.buf = append(*b.buf, p...)
	return len(p), nil
}

// batchListener is tls.NewListener with a recordBatcher between each
// accepted connection and its TLS layer.
type batchListener struct {
	net.Listener
	cfg *tls.Config
}

func newBatchListener(l net.Listener, cfg *tls.Config) net.Listener {
	return &batchListener{Listener: l, cfg: cfg}
}

func (l *batchListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return tls.Server(newRecordBatcher(c), l.cfg), nil
}

type batcherKey struct{}

// withBatcher is an http.Server's ConnContext: it lets a handler reach the
// recordBatcher under its request's TLS connection (batcherFrom).
func withBatcher(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		if b, ok := tc.NetConn().(*recordBatcher); ok {
			return context.WithValue(ctx, batcherKey{}, b)
		}
	}
	return ctx
}

// batcherFrom is the request's recordBatcher, nil when it has none.
func batcherFrom(ctx context.Context) *recordBatcher {
	b, _ := ctx.Value(batcherKey{}).(*recordBatcher)
	return b
}
