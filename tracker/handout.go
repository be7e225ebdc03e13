package tracker

import (
	"math/rand/v2"
	"net/netip"
)

// HandOutRequest is who asks and how many peers it may get, as the announce
// handler fills it.
type HandOutRequest struct {
	SelfID   [20]byte
	SelfAddr netip.AddrPort
	Group    string
	Limit    int
	// Young swarms get the origin first (YoungSwarm).
	Young bool
	// MaxPerIP caps the peers of one address; 0 means no cap.
	MaxPerIP int
	// Rand orders the peers within a class and group. A seeded source makes
	// the hand-out a function of its inputs (the simulator seeds it from its
	// seed); nil draws a source seeded from crypto/rand for this call. Not
	// safe for concurrent use.
	Rand *rand.Rand
}

// HandOut is the tracker's hand-out policy (selectPeers) for callers
// outside the package: the rollout simulator (tools/sim) feeds it the
// candidates MemoryStore.Announce sampled, exactly as the announce handler
// does, so the simulated swarm is formed by the code that forms the real one.
func HandOut(cands []Peer, r HandOutRequest) []Peer {
	maxPerIP := r.MaxPerIP
	if maxPerIP <= 0 {
		maxPerIP = len(cands) + 1
	}
	rng := r.Rand
	if rng == nil {
		rng = newRand()
	}
	return selectPeers(cands, handOut{
		selfID: r.SelfID, selfAddr: r.SelfAddr, group: r.Group, limit: r.Limit,
		young: r.Young, maxPerIP: maxPerIP, rng: rng,
	})
}

// YoungSwarm reports whether sw has fewer complete peers than threshold,
// the origin not counted: the announce handler's rule for offering the
// origin first.
func YoungSwarm(sw Swarm, threshold int) bool { return youngSwarm(sw, threshold) }
