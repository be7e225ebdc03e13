package tracker

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"time"
)

// Class orders peers for hand-out: the tracker prefers peers that can serve
// every piece, and among those prefers other nodes over the registry's own
// seeder so the origin is only used when the swarm cannot serve itself.
// Unverified peers (announces without a member signature, where the config
// admits them next to members) come after every member and the origin,
// whatever they claim to hold.
type Class uint8

const (
	ClassIncomplete Class = iota
	ClassComplete
	ClassOrigin
	ClassUnverified
	numClasses
)

func (c Class) String() string {
	switch c {
	case ClassIncomplete:
		return "incomplete"
	case ClassComplete:
		return "complete"
	case ClassOrigin:
		return "origin"
	case ClassUnverified:
		return "unverified"
	}
	return fmt.Sprintf("class(%d)", uint8(c))
}

// rank is the hand-out order of a class: lower goes first.
func (c Class) rank() int {
	switch c {
	case ClassComplete:
		return 0
	case ClassOrigin:
		return 1
	case ClassIncomplete:
		return 2
	}
	return 3
}

// Peer is one member of a swarm as the store keeps it.
type Peer struct {
	ID    [20]byte
	Addr  netip.AddrPort
	Class Class
	// Group is the node group or zone the peer declared ("" if none).
	Group string
	// Member is the cluster member that signed the announce ("" if none):
	// a member has one entry per swarm and address, whatever peer ids and
	// ports it announces with. Stores need not return it.
	Member string
}

// AnnounceInput is one announce as the store applies it.
type AnnounceInput struct {
	InfoHash [20]byte
	Peer     Peer
	// Stopped removes the peer instead of refreshing it.
	Stopped bool
	// Completed counts a finished download (BEP 48 "downloaded").
	Completed bool
	// TTL is how long the peer stays without announcing again.
	TTL time.Duration
	// Sample is how many candidate peers to return (0: none), taken class
	// by class in hand-out order (complete, incomplete, unverified),
	// randomly within a class. Up to maxOriginCandidates live origin peers
	// come on top of the budget whenever Sample > 0, so the policy can
	// always offer the origin to a young swarm.
	Sample int
}

// maxOriginCandidates bounds the origin peers a store returns per announce
// (registry replicas each seed, so a swarm can have a few).
const maxOriginCandidates = 4

// Swarm is the state of a swarm right after an announce was applied.
type Swarm struct {
	Counts
	// Candidates holds up to Sample live peers as described at
	// AnnounceInput.Sample, never the announcing peer itself. The hand-out
	// policy orders and trims them.
	Candidates []Peer
}

// Counts are the scrape figures of a swarm. Complete includes the origin;
// Incomplete includes unverified peers.
type Counts struct {
	Complete   int
	Incomplete int
	Downloaded int
}

// Store keeps swarms. Implementations must apply an announce atomically
// (update, prune and sample in one step) so replicas sharing a store never
// observe half-applied announces, and must prune a swarm's expired peers on
// its announces, so an announce never waits for a walk over every swarm
// (dropping swarms nobody announces to any more is left to the store: key
// expiry in Redis, a periodic sweep in memory). Work per announce must be
// O(Sample), not O(swarm): swarms of ten thousand peers are normal. Package tracker/storetest
// is the suite every implementation passes.
type Store interface {
	// Announce applies in at time now and returns the swarm afterwards.
	Announce(ctx context.Context, now time.Time, in AnnounceInput) (Swarm, error)
	// Scrape returns the counts of each swarm, zero for unknown ones.
	Scrape(ctx context.Context, now time.Time, infoHashes [][20]byte) ([]Counts, error)
	// Ping reports whether the store is usable.
	Ping(ctx context.Context) error
	Close() error
}

// ErrStoreUnavailable wraps every backend failure so the HTTP layer can tell
// "try again later" apart from bad requests.
var ErrStoreUnavailable = errors.New("peer store unavailable")

// maxGroupLen bounds the group a peer may declare; it is stored with every
// peer, so an unbounded value would let one client bloat the store.
const maxGroupLen = 64

// peerKey identifies a peer within a swarm: who announced, together with
// the IP it announced from. Who is the member name's hash for a signed
// announce (so a member has one entry per swarm and address: a restart
// with a new peer id or port replaces it), else the peer_id. The peer_id is
// chosen by the client and seen by every peer it talks to, so keyed by it
// alone any holder of an announce token could replace another node's
// address or stop its entry; with the source IP in the key a forged
// peer_id only ever makes (or stops) an entry of the forger's own address.
// The address is in a member's key too, so two nodes configured with the
// same node id do not take each other's place.
type peerKey struct {
	id [20]byte
	ip [16]byte
}

const peerKeyLen = 20 + 16

func keyOf(p Peer) peerKey {
	// As16 maps IPv4 to ::ffff:a.b.c.d, so a dual-stack listener's mapped
	// address and the plain IPv4 one give the same key.
	k := peerKey{id: p.ID, ip: p.Addr.Addr().As16()}
	if p.Member != "" {
		sum := sha256.Sum256([]byte("shoal tracker member\x00" + p.Member))
		copy(k.id[:], sum[:20])
	}
	return k
}

// memberRecord marks, in a record's class byte, a member's record, whose
// key does not hold its peer id.
const memberRecord = 0x80

// String is the key as bytes, for a Redis hash field and record prefix.
func (k peerKey) String() string { return string(k.id[:]) + string(k.ip[:]) }

// encodePeer is the compact form kept in Redis:
// key(36) | class(1) | addr length(1) | addr | [peer id(20), members only] | group.
// A member's key does not hold its peer id, which non-compact answers need;
// its class byte carries memberRecord.
func encodePeer(p Peer) []byte {
	return appendPeer(make([]byte, 0, peerKeyLen+2+18+20+len(p.Group)), p)
}

func appendPeer(b []byte, p Peer) []byte {
	k := keyOf(p)
	b = append(b, k.id[:]...)
	b = append(b, k.ip[:]...)
	cls := byte(p.Class)
	if p.Member != "" {
		cls |= memberRecord
	}
	b = append(b, cls, 0)
	at := len(b)
	b, _ = p.Addr.AppendBinary(b)
	b[at-1] = byte(len(b) - at) // 6 or 18, more with an IPv6 zone
	if p.Member != "" {
		b = append(b, p.ID[:]...)
	}
	return append(b, p.Group...)
}

func decodePeer(b []byte) (Peer, error) {
	var p Peer
	const hdr = peerKeyLen + 2
	if len(b) < hdr {
		return p, fmt.Errorf("peer record too short (%d bytes)", len(b))
	}
	var k peerKey
	copy(k.id[:], b[:20])
	copy(k.ip[:], b[20:peerKeyLen])
	member := b[peerKeyLen]&memberRecord != 0
	p.Class = Class(b[peerKeyLen] &^ memberRecord)
	n := int(b[peerKeyLen+1])
	if p.Class >= numClasses || len(b) < hdr+n {
		return p, errors.New("peer record corrupt")
	}
	if err := p.Addr.UnmarshalBinary(b[hdr : hdr+n]); err != nil {
		return p, fmt.Errorf("peer record address: %w", err)
	}
	if k.ip != p.Addr.Addr().As16() {
		return p, errors.New("peer record key does not match its address")
	}
	rest := b[hdr+n:]
	if member {
		if len(rest) < 20 {
			return p, errors.New("member record without its peer id")
		}
		copy(p.ID[:], rest[:20])
		rest = rest[20:]
	} else {
		p.ID = k.id
	}
	p.Group = string(rest)
	return p, nil
}

// SwarmInfo is one swarm as the read API lists it: live peers per class.
// The tracker only ever sees infohashes; what a swarm carries (a blob
// digest) is known to the registry that made the torrent, not here.
type SwarmInfo struct {
	InfoHash   [20]byte
	Complete   int // nodes holding every piece, without the origin
	Origin     int // the registry's own seeders
	Incomplete int
	Downloaded int
}

// Peers is the swarm's live peer count over every class.
func (s SwarmInfo) Peers() int { return s.Complete + s.Origin + s.Incomplete }

// Lister is implemented by stores that can list their swarms for the read
// API. It is kept apart from Store so the announce contract stays small.
type Lister interface {
	// Swarms returns up to limit live swarms, most peers first (ties by
	// infohash). Swarms with no live peer are left out.
	Swarms(ctx context.Context, now time.Time, limit int) ([]SwarmInfo, error)
}

// topSwarms sorts by peers (most first, then infohash) and trims to limit.
func topSwarms(all []SwarmInfo, limit int) []SwarmInfo {
	slices.SortFunc(all, func(a, b SwarmInfo) int {
		if c := cmp.Compare(b.Peers(), a.Peers()); c != 0 {
			return c
		}
		return bytes.Compare(a.InfoHash[:], b.InfoHash[:])
	})
	if limit >= 0 && len(all) > limit {
		all = all[:limit]
	}
	return all
}
