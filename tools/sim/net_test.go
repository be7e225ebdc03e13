package main

import (
	"math"
	"testing"
)

// TestMaxMin checks progressive filling against allocations worked out by
// hand.
func TestMaxMin(t *testing.T) {
	type fl struct {
		res    []int
		weight float64
		want   float64
	}
	tests := []struct {
		name  string
		caps  []float64
		flows []fl
	}{
		{"one flow takes the tighter link", []float64{10, 4}, []fl{{[]int{0, 1}, 1, 4}}},
		{"equal split of one uplink", []float64{9, 100, 100, 100},
			[]fl{{[]int{0, 1}, 1, 3}, {[]int{0, 2}, 1, 3}, {[]int{0, 3}, 1, 3}}},
		{"a flow capped elsewhere leaves its share to the others", []float64{12, 2, 100, 100},
			[]fl{{[]int{0, 1}, 1, 2}, {[]int{0, 2}, 1, 5}, {[]int{0, 3}, 1, 5}}},
		{"downlink shared by two senders", []float64{10, 10, 6},
			[]fl{{[]int{0, 2}, 1, 3}, {[]int{1, 2}, 1, 3}}},
		{"chain: registry → A, registry → B, A → B", []float64{10, 100, 8, 100, 100},
			// res 0 registry.up, 1 A.down, 2 A.up, 3 B.down (cap 100), flows:
			[]fl{{[]int{0, 1}, 1, 5}, {[]int{0, 3}, 1, 5}, {[]int{2, 3}, 1, 8}}},
		{"weights split a bottleneck in proportion", []float64{12, 100, 100},
			[]fl{{[]int{0, 1}, 1, 4}, {[]int{0, 2}, 2, 8}}},
		{"weighted flow capped elsewhere", []float64{12, 1, 100},
			[]fl{{[]int{0, 1}, 3, 1}, {[]int{0, 2}, 1, 11}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rs := make([]*resource, len(tt.caps))
			for i, c := range tt.caps {
				rs[i] = &resource{cap: c}
			}
			var flows []*flow
			for _, f := range tt.flows {
				x := &flow{weight: f.weight}
				for _, r := range f.res {
					x.res = append(x.res, rs[r])
					rs[r].flows = append(rs[r].flows, x)
				}
				flows = append(flows, x)
			}
			epoch := 0
			maxMin(flows, &epoch)
			for i, f := range flows {
				if math.Abs(f.new-tt.flows[i].want) > 1e-9 {
					t.Errorf("flow %d: rate %v, want %v", i, f.new, tt.flows[i].want)
				}
			}
			for i, r := range rs {
				used := 0.0
				for _, f := range r.flows {
					used += f.new
				}
				if used > r.cap+1e-9 {
					t.Errorf("resource %d: %v used of %v", i, used, r.cap)
				}
			}
		})
	}
}

// TestFlowPieces: a flow delivers its pieces at the times its rate
// gives, and a second flow joining halves the first one's rate from then.
func TestFlowPieces(t *testing.T) {
	s := &sim{}
	n := &network{sim: s}
	up := &resource{cap: 100}
	a, b := &resource{cap: 1000}, &resource{cap: 1000}
	var got []float64
	s.at(0, func() {
		n.start([]*resource{up, a}, 3, func(int) float64 { return 100 }, func(k int, last bool) { got = append(got, s.now) })
	})
	s.at(1.5, func() {
		n.start([]*resource{up, b}, 1, func(int) float64 { return 50 }, func(k int, last bool) { got = append(got, -s.now) })
	})
	s.run(100, nil)
	// Flow 1: piece 0 at 1 s; from 1.5 s both get 50/s: flow 1 has 50
	// left of piece 1 (done 2.5 s), flow 2's 50 bytes end at 2.5 s too;
	// then flow 1 alone at 100/s: piece 2 at 3.5 s.
	want := []float64{1, 2.5, -2.5, 3.5}
	if len(got) != len(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
}

// TestQuantum: with a quantum, a new flow gets its rate at the next
// multiple of it.
func TestQuantum(t *testing.T) {
	s := &sim{}
	n := &network{sim: s, quantum: 0.5}
	up, down := &resource{cap: 10}, &resource{cap: 10}
	var done float64
	s.at(0.2, func() {
		n.start([]*resource{up, down}, 1, func(int) float64 { return 10 }, func(int, bool) { done = s.now })
	})
	s.run(100, nil)
	if math.Abs(done-1.5) > 1e-9 {
		t.Fatalf("done at %v, want 1.5 (rate from 0.5 s)", done)
	}
}

// TestWriteJSONNonFinite: cells without a measured p50 and runs where a
// node never finished are written as null, not refused.
func TestWriteJSONNonFinite(t *testing.T) {
	path := t.TempDir() + "/v.json"
	v := []validation{{cell: cell{N: 3, P50: math.NaN(), Max: math.Inf(1)}, SimMax: 2}}
	if err := writeJSON(path, v); err != nil {
		t.Fatal(err)
	}
	var back []map[string]any
	if err := readJSON(path, &back); err != nil {
		t.Fatal(err)
	}
	if back[0]["measuredP50"] != nil || back[0]["measuredMax"] != nil || back[0]["nodes"] != 3.0 || back[0]["simMax"] != 2.0 {
		t.Fatalf("read back %v", back[0])
	}
}
