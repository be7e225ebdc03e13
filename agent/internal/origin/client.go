package origin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/swarm"
	"github.com/shoalproject/shoal/internal/regshare"
)

// Cred is one requester's way into the upstream: its repository (tokens are
// scoped to one) and its Authorization.
type Cred struct{ Repo, Auth string }

// Client makes the agent's requests to upstream registries.
type Client struct {
	// plain follows redirects (Go drops Authorization when a redirect
	// leaves the original host, which is what storage redirects need);
	// noRedirect lets the swarm path see the registry's 307.
	plain      *http.Client
	noRedirect *http.Client
	authTTL    time.Duration

	mu        sync.Mutex
	authCache map[string]accessOK
}

// accessOK is a remembered positive access check.
type accessOK struct {
	until time.Time
	size  int64 // -1: the upstream gave none
}

// NewClient makes requests through tr (NewTransport), ending bodies idle
// for idle; positive access checks are reused for authTTL.
func NewClient(tr http.RoundTripper, idle, authTTL time.Duration) *Client {
	up := idleReadTransport{rt: tr, idle: idle}
	return &Client{
		plain:      &http.Client{Transport: up},
		noRedirect: &http.Client{Transport: up, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
		authTTL:    authTTL,
		authCache:  map[string]accessOK{},
	}
}

// Do sends a request as it is (the mirror's pass-through routes), following
// redirects.
func (c *Client) Do(req *http.Request) (*http.Response, error) { return c.plain.Do(req) }

// CheckAccess asks the upstream (HEAD) whether this client's credentials may
// read the blob in this repository, before a cached or in-flight copy is
// served or a download starts, and returns the size it gave (-1 if none).
// Positive answers are reused for authTTL. A negative answer comes back as
// an *UpstreamError, to be relayed to the client unchanged.
func (c *Client) CheckAccess(ctx context.Context, base, repo, hexd, auth string) (int64, error) {
	sum := sha256.Sum256([]byte(auth))
	key := hex.EncodeToString(sum[:]) + "|" + base + "|" + repo + "|" + hexd
	c.mu.Lock()
	ok, hit := c.authCache[key]
	c.mu.Unlock()
	if hit && time.Now().Before(ok.until) {
		return ok.size, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, BlobURL(base, repo, hexd), nil)
	if err != nil {
		return 0, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	resp, err := c.plain.Do(req)
	if err != nil {
		return 0, fmt.Errorf("upstream access check: %w", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, &UpstreamError{Status: resp.StatusCode, Header: resp.Header}
	}
	size := resp.ContentLength
	c.mu.Lock()
	if len(c.authCache) > 10000 { // bounded: drop everything rather than track ages
		c.authCache = map[string]accessOK{}
	}
	c.authCache[key] = accessOK{until: time.Now().Add(c.authTTL), size: size}
	c.mu.Unlock()
	return size, nil
}

// GetBlob asks for the blob's bytes from off with cred.
func (c *Client) GetBlob(ctx context.Context, base string, cred Cred, hexd string, off int64) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, BlobURL(base, cred.Repo, hexd), nil)
	if err != nil {
		return nil, err
	}
	if cred.Auth != "" {
		req.Header.Set("Authorization", cred.Auth)
	}
	if off > 0 {
		req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
	}
	return c.plain.Do(req)
}

func isTorrentType(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/x-bittorrent"
}

// ErrBadTorrent is AskTorrent's error for metadata that does not parse.
var ErrBadTorrent = errors.New("parse torrent metadata")

// AskTorrent asks the upstream for the blob's torrent. A Shoal registry
// answers 307 to signed torrent metadata; a plain registry answers with the
// blob (200) or a storage redirect, which is returned as plain to be
// streamed over HTTP. dataURL is the registry's signed piece endpoint, if
// it gave one.
func (c *Client) AskTorrent(ctx context.Context, base string, cred Cred, hexd string) (mi *metainfo.MetaInfo, plain *http.Response, dataURL string, err error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, BlobURL(base, cred.Repo, hexd), nil)
	if err != nil {
		return nil, nil, "", err
	}
	r.Header.Set("Accept", "application/x-bittorrent")
	if cred.Auth != "" {
		r.Header.Set("Authorization", cred.Auth)
	}
	resp, err := c.noRedirect.Do(r)
	if err != nil {
		return nil, nil, "", fmt.Errorf("ask upstream for torrent: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusTemporaryRedirect, http.StatusFound, http.StatusSeeOther, http.StatusMovedPermanently, http.StatusPermanentRedirect:
		if resp, err = c.followTorrent(ctx, resp); err != nil {
			return nil, nil, "", err
		}
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, nil, "", &UpstreamError{Status: resp.StatusCode, Header: resp.Header, Body: body}
	}
	if !isTorrentType(resp.Header.Get("Content-Type")) {
		return nil, resp, "", nil
	}
	defer resp.Body.Close()
	mi, err = metainfo.Load(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, nil, "", fmt.Errorf("%w: %w", ErrBadTorrent, err)
	}
	return mi, nil, BlobDataURL(resp), nil
}

// followTorrent follows the registry's redirect to the torrent metadata.
func (c *Client) followTorrent(ctx context.Context, resp *http.Response) (*http.Response, error) {
	loc, err := resp.Location()
	resp.Body.Close()
	if err != nil {
		return nil, fmt.Errorf("upstream redirect without location: %w", err)
	}
	// The torrent URL is signed; no credentials go there (a storage
	// redirect target would reject them too).
	r2, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
	if err != nil {
		return nil, err
	}
	r2.Header.Set("Accept", "application/x-bittorrent")
	resp, err = c.plain.Do(r2)
	if err != nil {
		// Without the URL: it is signed, and errors end up in logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("fetch torrent metadata from %s: %w", loc.Host, err)
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, fmt.Errorf("fetch torrent metadata: status %d", resp.StatusCode)
	}
	return resp, nil
}

// BlobDataURL is the registry's signed URL for this blob's bytes, given with
// the torrent metadata (Shoal-Blob-Url). Only a URL on the host that served
// the metadata is taken: the agent fetches what it names.
func BlobDataURL(resp *http.Response) string {
	raw := resp.Header.Get("Shoal-Blob-Url")
	if raw == "" {
		return ""
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || resp.Request == nil || u.Host != resp.Request.URL.Host {
		return ""
	}
	return u.String()
}

// Range is the swarm engine's Origin for one flight: Range requests to the
// registry's signed piece endpoint while it takes them, then to the blob
// route with the flight's current credentials. The engine sees neither.
type Range struct {
	c      *Client
	f      *Flight
	length int64
	log    *logrus.Entry
	// dataURL is the registry's piece endpoint for this blob (nil: use the
	// blob route); the first refusal drops it.
	dataURL atomic.Pointer[string]
}

var _ swarm.Origin = (*Range)(nil)

// Range is f's blob, length bytes, through c; dataURL may be empty.
func (c *Client) Range(f *Flight, length int64, dataURL string, log *logrus.Entry) *Range {
	r := &Range{c: c, f: f, length: length, log: log}
	if dataURL != "" {
		r.dataURL.Store(&dataURL)
	}
	return r
}

// ReadRange implements swarm.Origin.
func (o *Range) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if u := o.dataURL.Load(); u != nil {
		body, err := o.get(ctx, *u, "", off, n, swarm.MarkedShare(ctx))
		var se *swarm.StatusError
		if !errors.As(err, &se) || se.Status < 400 || se.Status >= 500 || se.Status == regshare.StatusTaken {
			// Taken: another node fetches this share (regshare); the
			// engine leaves it to the swarm.
			return body, err
		}
		// Refused (the signed URL expired, or the registry no longer
		// serves it): the blob route with the client's credentials.
		o.dataURL.CompareAndSwap(u, nil)
		o.log.WithField("status", se.Status).Debug("registry's piece endpoint refused; using the blob route")
	}
	cred := o.f.Credential()
	body, err := o.get(ctx, BlobURL(o.f.Key.Base, cred.Repo, o.f.Key.Hex), cred.Auth, off, n, false)
	var se *swarm.StatusError
	if errors.As(err, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) {
		// Expired or never valid: the next attempt uses another
		// requester's credentials if one has some.
		o.f.flights.SwitchCred(o.f, cred, false)
	}
	return body, err
}

func (o *Range) get(ctx context.Context, target, auth string, off, n int64, share bool) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	if share {
		req.Header.Set(regshare.Header, "1")
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := o.c.plain.Do(req)
	if err != nil {
		// Not the *url.Error itself: the registry's signed URL carries a
		// token, and errors end up in logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("from %s: %w", req.URL.Host, err)
	}
	return swarm.RangeBody(resp, off, n, o.length)
}
