package tracker

import "net/netip"

// HandOut is the tracker's hand-out policy (selectPeers) for callers
// outside the package: the rollout simulator (tools/sim) feeds it the
// candidates MemoryStore.Announce sampled, exactly as GetPeers does, so
// the simulated swarm is formed by the code that forms the real one.
func HandOut(cands []Peer, selfID [20]byte, selfAddr netip.AddrPort, group string, limit int) []Peer {
	return selectPeers(cands, selfID, selfAddr, group, limit)
}
