// Package nodes is what preheat knows of the agents: their heartbeats,
// the keys they enrolled with, and which of them a job goes to.
package nodes

import (
	"context"
	"crypto/ed25519"
	"errors"
	"sort"
	"time"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/jobs"
)

// ErrNotFound is jobs.ErrNotFound: one not-found error for all of
// preheat's state.
var ErrNotFound = jobs.ErrNotFound

// Enrollment refusals (KeyStore.EnrollNode).
var (
	ErrKeyMismatch = errors.New("node id is enrolled with another key")
	ErrReplay      = errors.New("heartbeat is not newer than the last one accepted")
)

// Node is an agent as it registered through the heartbeat endpoint: its
// last accepted heartbeat (address checked, groups sorted) and what preheat
// adds to it.
type Node struct {
	nodeapi.Heartbeat
	// KeyFingerprint identifies the key the node enrolled with
	// (nodeapi.Fingerprint).
	KeyFingerprint string    `json:"keyFingerprint,omitempty"`
	LastSeen       time.Time `json:"lastSeen"`
	// ExpiresAt is LastSeen + heartbeat TTL: the node is alive before it.
	ExpiresAt time.Time `json:"expiresAt"`
}

// Alive reports whether the node's last heartbeat is still within its TTL.
func (n Node) Alive(now time.Time) bool { return now.Before(n.ExpiresAt) }

// Store keeps the nodes' last heartbeats.
type Store interface {
	// PutNode records a heartbeat received at now; the node counts as
	// alive for ttl and is listed (dead) for a while after.
	PutNode(ctx context.Context, now time.Time, n Node, ttl time.Duration) error
	// ListNodes returns nodes seen within the forget window, dead or alive.
	ListNodes(ctx context.Context) ([]Node, error)
}

// KeyStore pins node ids to the keys they enrolled with.
type KeyStore interface {
	// EnrollNode pins node id to key on first sight and records at as the
	// newest heartbeat accepted from it, atomically. The pin lives for keep
	// after now (far longer than the node record). It fails with
	// ErrKeyMismatch, returning the pinned key, when id is pinned to
	// another key, and with ErrReplay when at is not after the last
	// heartbeat accepted for id.
	EnrollNode(ctx context.Context, now time.Time, id string, key ed25519.PublicKey, at time.Time, keep time.Duration) (pinned ed25519.PublicKey, err error)
	// NodeKey is the key id is pinned to (ErrNotFound when none).
	NodeKey(ctx context.Context, id string) (ed25519.PublicKey, error)
	// ForgetNode drops the pin and the node record, so the node id can
	// enroll again with a new key (ErrNotFound when neither existed).
	ForgetNode(ctx context.Context, id string) error
}

// Sort orders nodes by id.
func Sort(ns []Node) { sort.Slice(ns, func(i, k int) bool { return ns[i].ID < ns[k].ID }) }
