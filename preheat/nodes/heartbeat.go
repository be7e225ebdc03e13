package nodes

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/nodeapi"
)

// CodeKeyMismatch is the error code of a heartbeat for a node id enrolled
// with another key (409).
const CodeKeyMismatch = "NODE_KEY_MISMATCH"

// Enroller accepts the agents' heartbeats: it verifies each and records
// the node it describes.
type Enroller struct {
	// Authority is the cluster's: a heartbeat is signed by a certificate
	// it issued.
	Authority *cluster.Authority
	Keys      KeyStore
	Nodes     Store
	// MaxSkew bounds how far a heartbeat's timestamp may be from now;
	// TTL is how long a node counts as alive after one; KeyRetention how
	// long its key stays pinned after the last.
	MaxSkew, TTL, KeyRetention time.Duration
}

// Refusal is a heartbeat not accepted, with the HTTP status it is
// answered with (400, 401 or 409) and a code of its own ("" for the
// status's).
type Refusal struct {
	Status int
	Code   string
	Msg    string
	// Err is why the signature did not verify (for a debug log).
	Err error
	// NodeID, Pinned and Presented are the node id, its enrolled key and
	// the key presented, on a CodeKeyMismatch refusal.
	NodeID            string
	Pinned, Presented ed25519.PublicKey
}

func (r *Refusal) Error() string { return r.Msg }

func refuse(status int, format string, a ...any) *Refusal {
	return &Refusal{Status: status, Msg: fmt.Sprintf(format, a...)}
}

// Accept records the heartbeat body signed in h, received at now. It
// counts only when signed by a certificate of the cluster naming the node
// id it reports, recently, later than the last one accepted for that id,
// and by the key that id enrolled with, and when its counts and downloads
// pass nodeapi's Check; anything else is a *Refusal.
// Store errors are returned as they are.
func (e *Enroller) Accept(ctx context.Context, now time.Time, h http.Header, body []byte) (Node, error) {
	m, at, err := nodeapi.Verify(e.Authority, h, http.MethodPost, nodeapi.HeartbeatPath, body, now, e.MaxSkew)
	if err != nil {
		return Node{}, &Refusal{Status: http.StatusUnauthorized, Msg: err.Error(), Err: err}
	}
	var hb nodeapi.Heartbeat
	if err := json.Unmarshal(body, &hb); err != nil {
		return Node{}, refuse(http.StatusBadRequest, "malformed heartbeat JSON")
	}
	if hb.ID == "" || hb.ID != m.Name {
		return Node{}, refuse(http.StatusUnauthorized, "heartbeat for node %q signed by the certificate of %q", hb.ID, m.Name)
	}
	addr, err := nodeapi.CheckAddress(hb.Address)
	if err != nil {
		return Node{}, refuse(http.StatusBadRequest, "heartbeat %v", err)
	}
	// Checked before enrollment: nothing of a heartbeat refused here is
	// kept, not even its timestamp as the node's newest.
	if err := hb.Check(); err != nil {
		return Node{}, refuse(http.StatusBadRequest, "%v", err)
	}
	pinned, err := e.Keys.EnrollNode(ctx, now, hb.ID, m.Key, at, e.KeyRetention)
	switch {
	case errors.Is(err, ErrKeyMismatch):
		return Node{}, &Refusal{Status: http.StatusConflict, Code: CodeKeyMismatch, NodeID: hb.ID, Pinned: pinned, Presented: m.Key,
			Msg: fmt.Sprintf("node %q is enrolled with another key (%s); an operator must forget it before it can enroll again", hb.ID, nodeapi.Fingerprint(pinned))}
	case errors.Is(err, ErrReplay):
		return Node{}, refuse(http.StatusUnauthorized, "heartbeat is not newer than the last one accepted for this node (replayed?)")
	case err != nil:
		return Node{}, err
	}
	hb.Address, hb.Groups = addr, SortedUnique(hb.Groups)
	n := Node{Heartbeat: hb, KeyFingerprint: nodeapi.Fingerprint(m.Key)}
	if err := e.Nodes.PutNode(ctx, now, n, e.TTL); err != nil {
		return Node{}, err
	}
	return n, nil
}

// SortedUnique is the form preheat keeps every list of names in (groups,
// node ids, platforms): trimmed, without empty or repeated entries, sorted.
func SortedUnique(in []string) []string {
	out := []string{}
	for _, v := range in {
		if v = strings.TrimSpace(v); v != "" && !slices.Contains(out, v) {
			out = append(out, v)
		}
	}
	sort.Strings(out)
	return out
}
