package tracker

import (
	"net/netip"
	"testing"
)

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
		got := selectPeers(cands, self.ID, self.Addr, "a", 100)
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
	got := selectPeers(cands, self.ID, self.Addr, "", 3)
	for _, p := range got {
		if p.Class != ClassComplete {
			t.Fatalf("limit 3 without group: got class %v first", p.Class)
		}
	}
	if n := len(selectPeers(cands, self.ID, self.Addr, "a", 0)); n != 0 {
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
		firsts[selectPeers(cands, pid(1), netip.AddrPort{}, "", 1)[0].ID] = true
	}
	if len(firsts) < 5 {
		t.Fatalf("only %d distinct first peers in 200 draws: not shuffled", len(firsts))
	}
}
