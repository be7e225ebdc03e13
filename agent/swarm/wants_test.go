package swarm

import (
	"slices"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/shoalproject/shoal/agent/sched"
)

// verifyingBlob is a memBlob that tells pieces written verified.
type verifyingBlob struct {
	*memBlob
	verified map[int]bool
}

func (b *verifyingBlob) WritePieceVerifiedLent(i int, data []byte, done func()) error {
	b.mu.Lock()
	b.verified[i] = true
	b.mu.Unlock()
	return b.WritePieceLent(i, data, true, done)
}

// A reader's pieces go first: alone, the first registry requests are for
// them (reason range), one each, they are SHA-1-checked although the
// registry is trusted, and the rest of the blob follows once they are in.
func TestEngineWantedFirstFromRegistry(t *testing.T) {
	const n = 40
	r := newRig(t, n)
	vb := &verifyingBlob{memBlob: r.blob, verified: map[int]bool{}}
	r.wants = NewWants(r.clock)
	done := r.wants.Add(30, 31)
	defer done()
	var claims [][]int
	r.peers.onClaim = func(pieces []int) { claims = append(claims, pieces) }
	res, err := r.runBlob(vb, time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r.checkBlob()
	if len(claims) < 3 || len(claims[0]) != 1 || len(claims[1]) != 1 || !slices.Equal(slices.Sorted(slices.Values(slices.Concat(claims[:2]...))), []int{30, 31}) {
		t.Errorf("registry requests for pieces %v, want 30 and 31 first, one request each", claims)
	}
	if got, want := r.metrics.registry["range"], 2*pieceLen; got != want {
		t.Errorf("range bytes from the registry %d, want %d", got, want)
	}
	if !vb.verified[30] || !vb.verified[31] || vb.verified[0] {
		t.Errorf("verified pieces %v: want the wanted ones, not the rest", vb.verified)
	}
}

// From a node that has the whole blob, the wanted pieces are requested
// at once, ahead of the in-order runs.
func TestEngineWantedFirstFromNode(t *testing.T) {
	const n = 64
	r := newRig(t, n, fakeNode{id: "a", has: all(n)})
	r.wants = NewWants(r.clock)
	defer r.wants.Add(50, 50)()
	res, err := r.run(time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r.checkBlob()
	// The first plan starts a request of its own for the wanted piece, with
	// the bulk runs (their goroutines race); without it, piece 50 would
	// come in the run from 48, the last one.
	if !slices.Contains(r.peers.reads, nodeRead{id: "a", off: 50 * pieceLen}) {
		t.Fatalf("node reads %v: no request of its own for piece 50", r.peers.reads)
	}
	if res.FromRegistry != 0 {
		t.Errorf("%d bytes from the registry with a seed connected", res.FromRegistry)
	}
}

// Two nodes reading the same range cost the registry one read: a wanted
// piece another node claimed is awaited, and taken from that node once it
// has it, not from the registry.
func TestEngineWantedClaimedElsewhere(t *testing.T) {
	const n = 16
	r := newRig(t, n)
	u := 9
	r.peers.nodes = []fakeNode{{id: "a", has: roaring.New(), later: roaring.BitmapOf(uint32(u)), at: r.clock.Now().Add(300 * time.Millisecond)}}
	r.peers.claimed = roaring.BitmapOf(uint32(u))
	r.wants = NewWants(r.clock)
	defer r.wants.Add(u, u)()
	res, err := r.run(time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if got := r.metrics.registry["range"]; got != 0 {
		t.Errorf("%d range bytes from the registry; the piece was claimed by another node", got)
	}
	found := false
	for _, rd := range r.peers.reads {
		found = found || rd.id == "a" && rd.off == int64(u)*pieceLen
	}
	if !found {
		t.Errorf("piece %d never read from the node that fetched it (reads %v)", u, r.peers.reads)
	}
}

// Another node's block, not claimed: this node waits sched's grace for the
// owner's claim, then fetches the piece itself.
func TestEngineWantedOwnerSilent(t *testing.T) {
	const n = 16
	r := newRig(t, n, fakeNode{id: "a", has: roaring.New()})
	u := -1
	for i := range n {
		if sched.Owner(i, []string{"self", "a"}) == "a" {
			u = i
			break
		}
	}
	r.wants = NewWants(r.clock)
	start := r.clock.Now()
	defer r.wants.Add(u, u)()
	var at time.Time
	r.peers.onClaim = func(pieces []int) {
		if at.IsZero() && slices.Contains(pieces, u) {
			at = r.clock.Now()
		}
	}
	if res, err := r.run(time.Minute); err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	if got := r.metrics.registry["range"]; got != pieceLen {
		t.Errorf("range bytes from the registry %d, want one piece", got)
	}
	// The grace counts from the want; settling (20 ms grace) runs meanwhile.
	if d := at.Sub(start); d < sched.DefaultLimits.UrgentGrace || d > sched.DefaultLimits.UrgentGrace+settleGrace+2*step {
		t.Errorf("piece fetched %v after it was wanted, want after the grace of %v", d, sched.DefaultLimits.UrgentGrace)
	}
}
