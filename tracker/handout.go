package tracker

import "net/netip"

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
	return selectPeers(cands, handOut{
		selfID: r.SelfID, selfAddr: r.SelfAddr, group: r.Group, limit: r.Limit,
		young: r.Young, maxPerIP: maxPerIP,
	})
}

// YoungSwarm reports whether sw has fewer complete peers than threshold,
// the origin not counted: the announce handler's rule for offering the
// origin first.
func YoungSwarm(sw Swarm, threshold int) bool { return youngSwarm(sw, threshold) }
