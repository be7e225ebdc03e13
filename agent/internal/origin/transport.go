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
// The clock runs only while a read waits for bytes, so neither a slow but
// moving body nor a reader busy with what it got (parsing 20 MiB of piece
// hashes on a loaded node) is cut.
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
	timer := time.AfterFunc(t.idle, cancel)
	timer.Stop() // armed by each Read
	resp.Body = &idleBody{ReadCloser: resp.Body, idle: t.idle, cancel: cancel, timer: timer}
	return resp, nil
}

type idleBody struct {
	io.ReadCloser
	idle   time.Duration
	timer  *time.Timer
	cancel context.CancelFunc
}

func (b *idleBody) Read(p []byte) (int, error) {
	b.timer.Reset(b.idle)
	n, err := b.ReadCloser.Read(p)
	b.timer.Stop()
	return n, err
}

func (b *idleBody) Close() error {
	b.timer.Stop()
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}
