package tracker

import (
	"fmt"
	"net/netip"
	"testing"
)

// ho is a hand-out for requester self with the default per-IP cap.
func ho(self Peer, group string, limit int) handOut {
	return handOut{selfID: self.ID, selfAddr: self.Addr, group: group, limit: limit, maxPerIP: 4, rng: newRand()}
}

func TestSelectPeers(t *testing.T) {
	mk := func(n int, c Class, group string) Peer {
		p := peerN(n, c)
		p.Group = group
		return p
	}
	self := mk(1, ClassIncomplete, "a")
	cands := []Peer{
		self,
		mk(2, ClassIncomplete, "a"),
		mk(3, ClassIncomplete, "b"),
		mk(4, ClassOrigin, ""),
		mk(5, ClassComplete, "b"),
		mk(6, ClassComplete, "a"),
		mk(7, ClassComplete, ""),
		// Same address as the requester under another id (restarted client).
		{ID: pid(8), Addr: self.Addr, Class: ClassComplete},
	}
	// Expected bucket sequence: complete+same group, complete other, origin,
	// incomplete same group, incomplete other.
	wantBuckets := [][]int{{6}, {5, 7}, {4}, {2}, {3}}
	for round := 0; round < 50; round++ {
		got := selectPeers(cands, ho(self, "a", 100))
		if len(got) != 6 {
			t.Fatalf("got %d peers, want 6 (requester excluded): %+v", len(got), got)
		}
		i := 0
		for _, b := range wantBuckets {
			set := map[[20]byte]bool{}
			for _, n := range b {
				set[pid(n)] = true
			}
			for range b {
				if !set[got[i].ID] {
					t.Fatalf("position %d: got peer %q, want one of %v", i, got[i].ID, b)
				}
				i++
			}
		}
	}
	// Without a declared group, class order alone applies.
	got := selectPeers(cands, ho(self, "", 3))
	for _, p := range got {
		if p.Class != ClassComplete {
			t.Fatalf("limit 3 without group: got class %v first", p.Class)
		}
	}
	if n := len(selectPeers(cands, ho(self, "a", 0))); n != 0 {
		t.Fatalf("limit 0 returned %d", n)
	}
}

func TestSelectPeersShuffles(t *testing.T) {
	var cands []Peer
	for i := 2; i < 12; i++ {
		cands = append(cands, peerN(i, ClassComplete))
	}
	firsts := map[[20]byte]bool{}
	for i := 0; i < 200; i++ {
		firsts[selectPeers(cands, ho(Peer{ID: pid(1)}, "", 1))[0].ID] = true
	}
	if len(firsts) < 5 {
		t.Fatalf("only %d distinct first peers in 200 draws: not shuffled", len(firsts))
	}
}

// TestSelectPeersSafety is the hand-out's defence against a swarm crowded
// by one party: unverified peers come after members and the origin, a
// young swarm always gets the origin, and one address never takes more
// than its share.
func TestSelectPeersSafety(t *testing.T) {
	at := func(n int, ip string, c Class) Peer {
		return Peer{ID: pid(n), Addr: netip.MustParseAddrPort(fmt.Sprintf("%s:%d", ip, 6000+n)), Class: c}
	}
	self := at(1, "10.0.0.1", ClassIncomplete)
	origin := at(2, "10.0.0.2", ClassOrigin)
	var fakes, members []Peer
	for i := 0; i < 60; i++ {
		fakes = append(fakes, at(100+i, fmt.Sprintf("10.6.%d.%d", i/4, i%4), ClassUnverified))
	}
	for i := 0; i < 3; i++ {
		members = append(members, at(10+i, fmt.Sprintf("10.1.0.%d", i), ClassComplete))
	}
	tests := []struct {
		name    string
		cands   []Peer
		young   bool
		limit   int
		first   []int // peer numbers that must lead, in any order
		origin  bool  // the origin is in the answer
		maxSame int   // most peers of one address
	}{
		{"fakes after members and origin", append(append(append([]Peer{}, fakes...), origin), members...), false, 50, []int{10, 11, 12}, true, 4},
		{"young swarm: origin first even when members fill the limit", append([]Peer{origin}, members...), true, 2, []int{2}, true, 1},
		{"old swarm: members fill the limit", append([]Peer{origin}, members...), false, 2, []int{10, 11, 12}, false, 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			for round := 0; round < 20; round++ {
				h := ho(self, "", tc.limit)
				h.young = tc.young
				got := selectPeers(tc.cands, h)
				lead := map[[20]byte]bool{}
				for _, n := range tc.first {
					lead[pid(n)] = true
				}
				for i := 0; i < min(len(tc.first), len(got)); i++ {
					if !lead[got[i].ID] {
						t.Fatalf("position %d: %q, want one of %v", i, got[i].ID, tc.first)
					}
				}
				hasOrigin := false
				perIP := map[netip.Addr]int{}
				for _, p := range got {
					hasOrigin = hasOrigin || p.Class == ClassOrigin
					perIP[p.Addr.Addr()]++
					if perIP[p.Addr.Addr()] > tc.maxSame {
						t.Fatalf("%d peers of %v", perIP[p.Addr.Addr()], p.Addr.Addr())
					}
				}
				if hasOrigin != tc.origin {
					t.Fatalf("origin handed out = %v, want %v: %v", hasOrigin, tc.origin, got)
				}
			}
		})
	}
	// Many peers of one (non-loopback) address: at most maxPerIP of them.
	var same []Peer
	for i := 0; i < 20; i++ {
		same = append(same, at(200+i, "10.9.9.9", ClassComplete))
	}
	if got := selectPeers(same, ho(self, "", 50)); len(got) != 4 {
		t.Fatalf("20 peers of one address: %d handed out, want 4", len(got))
	}
	// Loopback is exempt: single-host setups run every agent there.
	var local []Peer
	for i := 0; i < 20; i++ {
		local = append(local, at(300+i, "127.0.0.1", ClassComplete))
	}
	if got := selectPeers(local, ho(self, "", 50)); len(got) != 20 {
		t.Fatalf("20 loopback peers: %d handed out, want 20", len(got))
	}
}
