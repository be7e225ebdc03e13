package tracker

import (
	"math/rand/v2"
	"net/netip"
	"sort"
)

// selectPeers orders candidates for hand-out and keeps at most limit:
// completed peers first, then the origin, then incomplete peers; within a
// class, peers of the requester's group before the others; random order
// within each of those buckets so load spreads across equal peers. The
// requester itself (by peer id or by address) is never returned.
func selectPeers(cands []Peer, selfID [20]byte, selfAddr netip.AddrPort, group string, limit int) []Peer {
	if limit <= 0 {
		return nil
	}
	out := make([]Peer, 0, len(cands))
	for _, p := range cands {
		if p.ID == selfID || p.Addr == selfAddr {
			continue
		}
		out = append(out, p)
	}
	rand.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
	bucket := func(p Peer) int {
		b := p.Class.rank() * 2
		if group == "" || p.Group != group {
			b++
		}
		return b
	}
	// Stable so the shuffle survives inside each bucket.
	sort.SliceStable(out, func(i, j int) bool { return bucket(out[i]) < bucket(out[j]) })
	if len(out) > limit {
		out = out[:limit]
	}
	return out
}
