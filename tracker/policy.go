package tracker

import (
	crand "crypto/rand"
	"encoding/binary"
	"math/rand/v2"
	"net/netip"
)

// handOut is what the policy needs to know of one announce.
type handOut struct {
	// selfID and selfAddr identify the requester, never handed out.
	selfID   [20]byte
	selfAddr netip.AddrPort
	group    string
	limit    int
	// young swarms get the origin first.
	young bool
	// maxPerIP caps the peers of one address (loopback exempt).
	maxPerIP int
	// rng draws the order within a bucket. Not safe for concurrent use:
	// one per request (the server's pool) or per simulation.
	rng *rand.Rand
}

// newRand returns a source seeded from crypto/rand: every tracker and
// every pooled source draws its own sequence, so no announce can predict
// another's hand-out, and nothing shares the process-wide source.
func newRand() *rand.Rand {
	var b [16]byte
	_, _ = crand.Read(b[:]) // never fails (crypto/rand.Read since Go 1.24)
	return rand.New(rand.NewPCG(binary.LittleEndian.Uint64(b[:8]), binary.LittleEndian.Uint64(b[8:])))
}

// numBuckets: per class rank, same group then other groups.
const numBuckets = 2 * int(numClasses)

// selectPeers orders candidates for hand-out and keeps at most h.limit:
// completed peers first, then the origin, then incomplete peers, then
// unverified ones; within a class, peers of the requester's group before
// the others; random order within each of those buckets so load spreads
// across equal peers. A young swarm gets the origin first, so whatever
// else the swarm holds, the requester can reach its source. No address
// gets more than h.maxPerIP of the places. The requester itself (by key,
// peer id or address) is never returned. O(candidates). The order is a
// function of cands and h.rng's state alone, so a seeded source replays it.
func selectPeers(cands []Peer, h handOut) []Peer {
	if h.limit <= 0 || len(cands) == 0 {
		return nil
	}
	bucket := func(p Peer) int {
		r := p.Class.rank()
		if h.young && p.Class == ClassOrigin {
			r = -1
		}
		b := (r + 1) * 2
		if h.group == "" || p.Group != h.group {
			b++
		}
		return b
	}
	const nb = numBuckets + 2 // rank -1 for a young swarm's origin
	var counts [nb + 1]int
	keep := make([]int8, len(cands))
	for i, p := range cands {
		// The store already left out the requester's own entry (by key);
		// this catches its other ids and addresses. No keyOf here: a
		// member key is a hash, and this loop runs per candidate.
		if p.ID == h.selfID || p.Addr == h.selfAddr {
			keep[i] = -1
			continue
		}
		b := bucket(p)
		keep[i] = int8(b)
		counts[b+1]++
	}
	for b := 1; b <= nb; b++ {
		counts[b] += counts[b-1]
	}
	// Counting sort of indices into bucket order, then shuffle within each
	// bucket: indices, not Peers, so a 4x sample of 200 moves 3 KiB, not 70.
	ordered := make([]int32, counts[nb])
	next := counts
	for i := range cands {
		if b := keep[i]; b >= 0 {
			ordered[next[b]] = int32(i)
			next[b]++
		}
	}
	for b := 0; b < nb; b++ {
		part := ordered[counts[b]:counts[b+1]]
		h.rng.Shuffle(len(part), func(i, j int) { part[i], part[j] = part[j], part[i] })
	}
	out := make([]Peer, 0, min(h.limit, len(ordered)))
	var perIP map[netip.Addr]int
	for _, i := range ordered {
		p := cands[i]
		if len(out) == h.limit {
			break
		}
		if a := p.Addr.Addr(); !a.IsLoopback() {
			if perIP == nil {
				perIP = make(map[netip.Addr]int, h.limit)
			}
			if perIP[a] >= h.maxPerIP {
				continue
			}
			perIP[a]++
		}
		out = append(out, p)
	}
	return out
}
