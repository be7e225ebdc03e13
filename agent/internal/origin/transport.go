package origin

import (
	"context"
	"io"
	"net"
	"net/http"
	"time"
)

// Timeouts bound every call to an upstream registry.
type Timeouts struct {
	Dial, TLSHandshake, ResponseHeader time.Duration
	// IdleRead ends a response whose body delivers nothing this long.
	IdleRead time.Duration
}

// NewTransport is the one transport for calls to upstream registries:
// every phase of a request that waits on the other side has a limit (dial,
// TLS handshake, response headers; bodies: idleReadTransport).
func NewTransport(t Timeouts) *http.Transport {
	d := &net.Dialer{Timeout: t.Dial, KeepAlive: 30 * time.Second}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   t.TLSHandshake,
		ResponseHeaderTimeout: t.ResponseHeader,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          100,
		MaxIdleConnsPerHost:   32,
	}
}

// idleReadTransport ends a response whose body delivers nothing for idle:
// a registry that sent its headers and then hung must not pin a download.
// The clock restarts at every read that returns bytes, so a slow but
// moving body is never cut.
type idleReadTransport struct {
	rt   http.RoundTripper
	idle time.Duration
}

func (t idleReadTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	ctx, cancel := context.WithCancel(req.Context())
	resp, err := t.rt.RoundTrip(req.WithContext(ctx))
	if err != nil {
		cancel()
		return nil, err
	}
	resp.Body = &idleBody{ReadCloser: resp.Body, idle: t.idle, cancel: cancel, timer: time.AfterFunc(t.idle, cancel)}
	return resp, nil
}

type idleBody struct {
	io.ReadCloser
	idle   time.Duration
	timer  *time.Timer
	cancel context.CancelFunc
}

func (b *idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.timer.Reset(b.idle)
	}
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
