package nodeapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
)

// maxAnswer bounds what is read of any answer: the contract's bodies are
// small, and the other side is not trusted to say so.
const maxAnswer = 64 << 10

// maxTransports bounds the per-node connection pools a client keeps.
const maxTransports = 4096

// Client speaks the contract as one cluster member: an agent sending
// heartbeats, or preheat calling agents.
type Client struct {
	authority *cluster.Authority
	identity  *cluster.Identity
	now       func() time.Time
	// plain sends heartbeats. The preheat URL may be http: the heartbeat
	// carries no secret and its signature covers what preheat acts on.
	plain *http.Client

	mu sync.Mutex
	// transports are per node address and pinned key: each dials only
	// that node and accepts only that key.
	transports map[string]*http.Transport
}

// NewClient makes a client acting as identity, a member of authority's
// cluster.
func NewClient(authority *cluster.Authority, identity *cluster.Identity) *Client {
	return &Client{
		authority:  authority,
		identity:   identity,
		now:        time.Now,
		plain:      &http.Client{Transport: newTransport()},
		transports: map[string]*http.Transport{},
	}
}

func newTransport() *http.Transport {
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		TLSHandshakeTimeout:   10 * time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConnsPerHost:   8,
		ExpectContinueTimeout: time.Second,
	}
}

// StatusError is an answer other than success. Detail is the other side's
// error text, bounded, for debug logs only: never show it to a user or
// store it (it may echo a registry's body).
type StatusError struct {
	Status int
	Code   string
	Detail string
}

func (e *StatusError) Error() string {
	if e.Code != "" {
		return fmt.Sprintf("answered %d (%s)", e.Status, e.Code)
	}
	return fmt.Sprintf("answered %d", e.Status)
}

var knownCodes = map[string]bool{CodeInvalid: true, CodeUpstreamDenied: true, CodeBlobUnknown: true,
	CodeUpstream: true, CodeSizeMismatch: true, CodeFetchFailed: true}

func statusError(resp *http.Response) *StatusError {
	raw, _ := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	e := &StatusError{Status: resp.StatusCode}
	var b ErrorBody
	if json.Unmarshal(raw, &b) == nil {
		if knownCodes[b.Code] {
			e.Code = b.Code
		}
		e.Detail = b.Error
	}
	if len(e.Detail) > 512 {
		e.Detail = e.Detail[:512]
	}
	return e
}

// Heartbeat signs hb with this member's identity and POSTs it to the
// preheat service at baseURL.
func (c *Client) Heartbeat(ctx context.Context, baseURL string, hb Heartbeat) error {
	body, err := json.Marshal(hb)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(baseURL, "/")+HeartbeatPath, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	Sign(req.Header, c.identity, http.MethodPost, HeartbeatPath, body, c.now())
	resp, err := c.plain.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return statusError(resp)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxAnswer))
	return nil
}

// Fetch asks the agent at address (its enrolled https://host:port) to
// fetch one blob, over mutual TLS that accepts only the pinned key.
// Failures to reach the agent wrap ErrUnreachable; answers other than 200
// are *StatusError.
func (c *Client) Fetch(ctx context.Context, address string, pin ed25519.PublicKey, fr FetchRequest) (*FetchResponse, error) {
	if len(pin) != ed25519.PublicKeySize {
		return nil, errors.New("nodeapi: refusing to call an agent without its enrolled key")
	}
	base, err := CheckAddress(address)
	if err != nil {
		return nil, fmt.Errorf("nodeapi: %w", err)
	}
	body, err := json.Marshal(fr)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+FetchPath, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := (&http.Client{Transport: c.transport(base, pin)}).Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		return nil, fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	var out FetchResponse
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxAnswer)).Decode(&out); err != nil {
		return nil, fmt.Errorf("nodeapi: agent answered 200 with a malformed body")
	}
	return &out, nil
}

func (c *Client) transport(base string, pin ed25519.PublicKey) *http.Transport {
	key := base + "|" + string(pin)
	c.mu.Lock()
	defer c.mu.Unlock()
	if tr, ok := c.transports[key]; ok {
		return tr
	}
	if len(c.transports) >= maxTransports {
		for k, tr := range c.transports {
			tr.CloseIdleConnections()
			delete(c.transports, k)
		}
	}
	tr := newTransport()
	// Nodes are on the cluster network: never through a proxy.
	tr.Proxy = nil
	tr.TLSClientConfig = c.authority.ClientTLS(c.identity, pin)
	tr.ForceAttemptHTTP2 = true
	c.transports[key] = tr
	return tr
}

// CloseIdleConnections releases every pooled connection.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, tr := range c.transports {
		tr.CloseIdleConnections()
	}
	c.plain.CloseIdleConnections()
}

// IsPinMismatch reports whether err is a node presenting a certificate
// that is not a member's or not the enrolled key.
func IsPinMismatch(err error) bool { return errors.Is(err, cluster.ErrNotMember) }
