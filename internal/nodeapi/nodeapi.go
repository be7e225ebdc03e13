// Package nodeapi is the wire contract between agents and preheat: the
// paths, the bodies, how a heartbeat proves which node sent it, and a typed
// client for each direction. Both sides import it, so the contract has one
// definition.
//
// Trust: a heartbeat is signed with the node's cluster identity (its
// certificate chain and an Ed25519 signature over method, path, timestamp
// and body hash travel in headers), so preheat learns a node's address only
// from a holder of the join secret whose certificate carries that node id.
// Preheat calls an agent's control API over mutual TLS pinned to the key it
// enrolled for that node, so pull credentials go only to that node.
package nodeapi

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/internal/httpx"
)

// Paths of the contract.
const (
	// HeartbeatPath is served by preheat; agents POST a signed Heartbeat.
	HeartbeatPath = "/api/v1/nodes/heartbeat"
	// FetchPath is served by the agent's control listener (mutual TLS).
	FetchPath = "/_shoal/v1/fetch"
)

// Heartbeat is what an agent POSTs to preheat every interval.
type Heartbeat struct {
	ID string `json:"id"`
	// Address is where the agent's control API answers: https://host:port.
	Address        string   `json:"address"`
	Groups         []string `json:"groups"`
	CacheFreeBytes int64    `json:"cacheFreeBytes"`
	CacheUsedBytes int64    `json:"cacheUsedBytes"`
	// StartedAt is when this agent process started: the counters below
	// count from then, so a restart (counters back to zero) is told apart
	// from a quiet node.
	StartedAt time.Time `json:"startedAt,omitzero"`
	// BytesServedToPeers counts blob bytes this node uploaded to other
	// nodes since it started; BytesFromPeers and BytesFromRegistry the
	// blob bytes it downloaded from other nodes and from the registry.
	// Counters: a console shows rates.
	BytesServedToPeers int64 `json:"bytesServedToPeers"`
	BytesFromPeers     int64 `json:"bytesFromPeers"`
	BytesFromRegistry  int64 `json:"bytesFromRegistry"`
	// Downloads are the largest blobs in flight on the node (long pulls
	// only: an agent lists blobs of 64 MiB and more, at most MaxDownloads),
	// so the console can show where a multi-GiB pull stands.
	Downloads []Download `json:"downloads,omitempty"`
}

// MaxDownloads bounds Heartbeat.Downloads.
const MaxDownloads = 8

// Download is one blob in flight on a node.
type Download struct {
	Digest string `json:"digest"`
	// Size is -1 while the node does not know it yet.
	Size              int64     `json:"size"`
	BytesFromPeers    int64     `json:"bytesFromPeers"`
	BytesFromRegistry int64     `json:"bytesFromRegistry"`
	StartedAt         time.Time `json:"startedAt"`
	// BytesPerSecond is the average rate since StartedAt.
	BytesPerSecond int64 `json:"bytesPerSecond"`
}

// Check refuses what a heartbeat cannot honestly say: negative counts,
// more downloads than MaxDownloads, a download that is not a digest or
// that has more bytes than its size. The receiver calls it before it keeps
// or shows anything of the heartbeat.
func (h *Heartbeat) Check() error {
	if h.BytesServedToPeers < 0 || h.BytesFromPeers < 0 || h.BytesFromRegistry < 0 || h.CacheFreeBytes < 0 || h.CacheUsedBytes < 0 {
		return errors.New("heartbeat byte counts must not be negative")
	}
	if len(h.Downloads) > MaxDownloads {
		return fmt.Errorf("heartbeat lists %d downloads, more than %d", len(h.Downloads), MaxDownloads)
	}
	for i, d := range h.Downloads {
		if _, err := digest.Parse(d.Digest); err != nil {
			return fmt.Errorf("heartbeat download %d: not a digest", i)
		}
		got := d.BytesFromPeers + d.BytesFromRegistry
		switch {
		case d.Size < -1 || d.BytesFromPeers < 0 || d.BytesFromRegistry < 0 || d.BytesPerSecond < 0 || got < 0:
			return fmt.Errorf("heartbeat download %d: counts must not be negative", i)
		case d.Size >= 0 && got > d.Size:
			return fmt.Errorf("heartbeat download %d: %d bytes of a %d-byte blob", i, got, d.Size)
		}
	}
	return nil
}

// FetchRequest is the body of POST FetchPath.
type FetchRequest struct {
	Registry   string `json:"registry"`
	Repository string `json:"repository"`
	Digest     string `json:"digest"`
	Size       int64  `json:"size"`
	// Headers (the job's pull Authorization) are used for this fetch only,
	// never logged or stored.
	Headers map[string]string `json:"headers,omitempty"`
}

// FetchResponse is the agent's 200 answer, once the blob is cached and
// verified.
type FetchResponse struct {
	Digest            string `json:"digest"`
	Size              int64  `json:"size"`
	Source            string `json:"source"` // cache | p2p | http
	BytesFromPeers    int64  `json:"bytesFromPeers"`
	BytesFromRegistry int64  `json:"bytesFromRegistry"`
}

// Error codes an agent answers a failed fetch with. Preheat shows a fixed
// message per code, never the agent's or the registry's text.
const (
	CodeInvalid        = "INVALID"                 // the request was malformed
	CodeUpstreamDenied = "UPSTREAM_DENIED"         // the registry refused the credentials (401/403)
	CodeBlobUnknown    = "BLOB_UNKNOWN"            // the registry has no such blob (404)
	CodeUpstream       = "UPSTREAM_ERROR"          // the registry answered another error
	CodeSizeMismatch   = "SIZE_MISMATCH"           // the blob's size differs from the manifest's
	CodeFetchFailed    = "FETCH_FAILED"            // the download failed (network, digest, disk)
	CodeNotConfigured  = "REGISTRY_NOT_CONFIGURED" // the registry is not one of the agent's upstreams
	CodeTooLarge       = "BLOB_TOO_LARGE"          // the blob does not fit the agent's cache
)

// ErrorBody is the one JSON error shape of both sides, the house's
// (internal/httpx); the codes above are the fetch-specific ones.
type ErrorBody = httpx.ErrorBody

// CheckAddress accepts what a node may advertise: https://host:port with
// nothing else (no user info, path, query or fragment), and returns it in
// its canonical form.
func CheckAddress(s string) (string, error) {
	u, err := url.Parse(s)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || (u.Path != "" && u.Path != "/") ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", fmt.Errorf("address %q must be https://host:port", s)
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return "", fmt.Errorf("address %q must be https://host:port", s)
	}
	if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
		return "", fmt.Errorf("address %q: bad port", s)
	}
	return "https://" + u.Host, nil
}

// Fingerprint is how a node key is shown in logs and listings: the first
// 16 bytes of its SHA-256, hex.
func Fingerprint(key ed25519.PublicKey) string {
	sum := sha256.Sum256(key)
	return hex.EncodeToString(sum[:16])
}

// ErrUnreachable wraps failures to reach an agent at all (dial, TLS
// handshake, a pin mismatch), as opposed to an answer.
var ErrUnreachable = errors.New("agent unreachable")
