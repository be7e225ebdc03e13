package sched

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
)

func bm(pieces ...int) *roaring.Bitmap {
	b := roaring.New()
	for _, i := range pieces {
		b.Add(uint32(i))
	}
	return b
}

func span(from, to int) []int {
	var out []int
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}

// owned lists the pieces of an n-piece blob (blocks of one piece) whose
// registry share belongs to self among ids.
func owned(self string, n int, ids ...string) []int {
	var out []int
	for i := range n {
		if Owner(i, ids) == self {
			out = append(out, i)
		}
	}
	return out
}

// ones is one single-piece registry fetch per piece, of this node's share.
func ones(pieces ...int) []Fetch {
	var out []Fetch
	for _, i := range pieces {
		out = append(out, Fetch{First: i, Count: 1, Why: "share"})
	}
	return out
}

// soloWant is the first fetches planSolo starts for self's share mine
// (blocks of one piece) with origin requests left, runs of at most run,
// skipping the piece in flight from the registry.
func soloWant(mine []int, skip, left, run int) []Fetch {
	var out []Fetch
	for _, share := range []bool{true, false} {
		for i := 0; i < 8 && len(out) < left; i++ {
			ok := func(i int) bool {
				return i < 8 && i != skip && (!share || slices.Contains(mine, i)) && !planned(out, i)
			}
			if !ok(i) {
				continue
			}
			first := i
			for ; ok(i) && i-first < run; i++ {
			}
			out = append(out, Fetch{First: first, Count: i - first, Why: "solo"})
			i--
		}
	}
	return out
}

func planned(fs []Fetch, i int) bool {
	for _, f := range fs {
		if i >= f.First && i < f.First+f.Count {
			return true
		}
	}
	return false
}

func TestPlan(t *testing.T) {
	mineA, mineB := owned("a", 8, "a", "b"), owned("b", 8, "a", "b")
	if len(mineA) < 2 || len(mineB) < 3 {
		t.Fatalf("test needs a few pieces each: a=%v b=%v", mineA, mineB)
	}
	t0 := time.Unix(1000, 0)
	lim := Limits{PerPeer: 2, PeerRun: 4, OriginRequests: 2, OriginRun: 2, AloneRun: 5, SwarmOrigin: 4, StealAfter: time.Second, StealStagger: 100 * time.Millisecond}
	base := func() Snapshot {
		return Snapshot{Now: t0, NumPieces: 8, Self: "b", Have: bm(), InFlight: bm(), Claimed: bm(), Phase: Phase{Settled: true}}
	}
	tests := []struct {
		name string
		edit func(*Snapshot)
		want []Fetch
		idle time.Time
	}{
		{
			name: "alone at first: one piece per request",
			edit: func(s *Snapshot) {},
			want: []Fetch{{First: 0, Count: 1, Why: "alone"}, {First: 1, Count: 1, Why: "alone"}},
		},
		{
			name: "alone for a while: longer runs, up to AloneRun",
			edit: func(s *Snapshot) { s.AloneRun = 64 },
			want: []Fetch{{First: 0, Count: 5, Why: "alone"}, {First: 5, Count: 3, Why: "alone"}},
		},
		{
			name: "alone, part present: one request per gap",
			edit: func(s *Snapshot) { s.Have = bm(2, 3, 6); s.AloneRun = 8 },
			want: []Fetch{{First: 0, Count: 2, Why: "alone"}, {First: 4, Count: 2, Why: "alone"}},
		},
		{
			name: "no node connected yet, but connections still forming: not alone, wait",
			edit: func(s *Snapshot) { s.Forming = true },
		},
		{
			name: "not settled: nothing from the registry yet",
			edit: func(s *Snapshot) { s.Settled = false },
		},
		{
			name: "a seed peer: runs of PeerRun, PerPeer at a time, nothing from the registry",
			edit: func(s *Snapshot) { s.Peers = []Peer{{ID: "a", Has: bm(span(0, 8)...), Data: true}} },
			want: []Fetch{{Peer: "a", First: 0, Count: 4}, {Peer: "a", First: 4, Count: 4}},
		},
		{
			name: "a busy peer gets no more requests",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(span(0, 8)...), Data: true, Busy: 2}}
				s.InFlight = bm(span(0, 8)...)
			},
		},
		{
			name: "a peer without the data path is not asked, but its pieces are not the registry's",
			edit: func(s *Snapshot) { s.Peers = []Peer{{ID: "a", Has: bm(span(0, 8)...)}} },
		},
		{
			name: "rarest first, one piece per request from nodes still downloading",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{
					{ID: "a", Has: bm(0, 1, 2, 5), Data: true, Busy: 1},
					{ID: "c", Has: bm(0, 1), Data: true, Busy: 1},
				}
				s.Have = bm(3, 4, 6, 7)
			},
			// a: pieces 2 and 5 have one holder, 2 comes first; c: 0.
			want: []Fetch{{Peer: "a", First: 2, Count: 1}, {Peer: "c", First: 0, Count: 1}},
		},
		{
			name: "runs from a complete node stop at what we have",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(span(0, 8)...), Data: true, Busy: 1}}
				s.Have = bm(2)
			},
			want: []Fetch{{Peer: "a", First: 0, Count: 2}},
		},
		{
			name: "swarm of four: my pieces only, OriginRequests at a time",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}, {ID: "c", Has: bm(), Data: true}, {ID: "d", Has: bm(), Data: true}}
			},
			want: ones(owned("b", 8, "a", "b", "c", "d")[:2]...),
		},
		{
			name: "swarm of two: claimed pieces are left to the claimer",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Claimed = bm(mineB[0])
			},
			want: ones(mineB[1:3]...),
		},
		{
			name: "swarm cap counts other nodes' claims and my own pieces in flight",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Claimed = bm(mineA[:2]...)
				s.OriginBusy, s.OriginPieces = 2, 2
				s.InFlight = bm(mineB[:2]...)
			},
		},
		{
			name: "claimed pieces a node already has do not count against the cap",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(mineA...), Data: true, Busy: 2}}
				s.Claimed = bm(mineA...)
				s.InFlight = bm(mineA...)
			},
			want: ones(mineB[:2]...),
		},
		{
			name: "share done and nothing at nodes: the idle clock starts",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(mineB...)
			},
			idle: t0,
		},
		{
			name: "idle, not long enough for rank 1",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(mineB...)
				s.IdleSince = t0.Add(-1050 * time.Millisecond)
			},
			idle: t0.Add(-1050 * time.Millisecond),
		},
		{
			name: "idle long enough: steal from the end, rank-th candidate",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(mineB...)
				s.IdleSince = t0.Add(-2 * time.Second)
			},
			// candidates: a's pieces from the end; b has rank 1.
			want: []Fetch{{First: mineA[len(mineA)-2], Count: 1, Why: "steal"}},
		},
		{
			name: "while any node fetches from the registry, nobody steals",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(mineB...)
				s.Claimed = bm(mineA[0])
				s.IdleSince = t0.Add(-2 * time.Second)
			},
		},
		{
			name: "solo alone: every missing piece, in long runs",
			edit: func(s *Snapshot) {
				s.Have = bm(2)
				s.Solo = true
				s.AloneRun = 64
			},
			want: []Fetch{{First: 0, Count: 2, Why: "solo"}, {First: 3, Count: 5, Why: "solo"}},
		},
		{
			name: "solo: own share first, then what nodes advertise, claim or are sending",
			edit: func(s *Snapshot) {
				// a advertises everything (no data port yet) and claims
				// some; 5 is coming from a node already, 6 from the
				// registry.
				s.Peers = []Peer{{ID: "a", Has: bm(span(0, 8)...), Data: false}}
				s.Claimed = bm(0, 1)
				s.InFlight = bm(5, 6)
				s.OriginInFlight = bm(6) // its request counts in OriginBusy elsewhere
				s.Solo = true
			},
			want: soloWant(mineB, 6, 2, 2),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := base()
			tt.edit(&s)
			got, idle := Plan(s, lim)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Plan = %+v, want %+v", got, tt.want)
			}
			if !idle.Equal(tt.idle) {
				t.Errorf("idleSince = %v, want %v", idle, tt.idle)
			}
		})
	}
}

func TestPlanPartitionCoversEveryPieceOnce(t *testing.T) {
	// Three nodes, nobody has anything, no claims, no cap: the registry
	// shares are disjoint and cover the blob.
	lim := DefaultLimits
	lim.SwarmOrigin, lim.OriginRequests = 1<<20, 1<<20
	ids := []string{"x", "y", "z"}
	seen := map[int]string{}
	for _, self := range ids {
		var peers []Peer
		for _, o := range ids {
			if o != self {
				peers = append(peers, Peer{ID: o, Has: bm(), Data: true})
			}
		}
		s := Snapshot{Now: time.Unix(0, 0), NumPieces: 37, Self: self, Have: bm(), InFlight: bm(), Claimed: bm(), Peers: peers, Phase: Phase{Settled: true}}
		fs, _ := Plan(s, lim)
		for _, f := range fs {
			for i := f.First; i < f.First+f.Count; i++ {
				if other, dup := seen[i]; dup {
					t.Fatalf("piece %d planned by %s and %s", i, other, self)
				}
				seen[i] = self
			}
		}
	}
	if len(seen) != 37 {
		t.Fatalf("shares cover %d of 37 pieces", len(seen))
	}
}

func TestWatch(t *testing.T) {
	t0 := time.Unix(1000, 0)
	const bound, deadline = 5 * time.Second, time.Minute
	tests := []struct {
		name               string
		now, piece, origin time.Time
		solo               bool
		want               Verdict
	}{
		{"a piece arrived lately", t0.Add(10 * time.Second), t0.Add(9 * time.Second), time.Time{}, false, Wait},
		{"no piece for the bound: solo, whatever is in flight", t0.Add(10 * time.Second), t0.Add(5 * time.Second), t0.Add(10 * time.Second), false, GoSolo},
		{"solo, registry bytes still arriving", t0.Add(20 * time.Second), t0.Add(10 * time.Second), t0.Add(19 * time.Second), true, Wait},
		{"solo, nothing from anyone: give up", t0.Add(20 * time.Second), t0.Add(10 * time.Second), t0.Add(10 * time.Second), true, GiveUp},
		{"deadline beats everything", t0.Add(2 * time.Minute), t0.Add(2 * time.Minute), t0.Add(2 * time.Minute), false, GiveUp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Watch(tt.now, t0, tt.piece, tt.origin, tt.solo, bound, deadline); got != tt.want {
				t.Errorf("Watch = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestStallBound(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name     string
		pieceLen int64
		rate     float64
		floor    time.Duration
		want     time.Duration
	}{
		{"1 MiB pieces at 1 MiB/s: the floor", mib, mib, 5 * time.Second, 5 * time.Second},
		{"8 MiB pieces at 1 MiB/s: four piece-times", 8 * mib, mib, 5 * time.Second, 32 * time.Second},
		{"8 MiB pieces at 16 MiB/s: the floor", 8 * mib, 16 * mib, 5 * time.Second, 5 * time.Second},
		{"64 MiB pieces at 1 MiB/s: capped", 64 * mib, mib, 5 * time.Second, MaxStallBound},
		{"a floor above the cap wins", 64 * mib, mib, 2 * time.Minute, 2 * time.Minute},
		{"no rate: the cap", mib, 0, time.Second, MaxStallBound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := StallBound(tt.pieceLen, tt.rate, tt.floor); got != tt.want {
				t.Errorf("StallBound = %v, want %v", got, tt.want)
			}
		})
	}
}

// A node joining takes blocks only for itself: every other block keeps
// its owner, so nodes whose views differ by that node still agree on it.
func TestOwnerStableWhenANodeJoins(t *testing.T) {
	ids := []string{"n1", "n2", "n3", "n4", "n5", "n6", "n7"}
	grown := append(slices.Clone(ids), "n8")
	moved := 0
	for k := range 1000 {
		before, after := Owner(k, ids), Owner(k, grown)
		if after != before {
			if after != "n8" {
				t.Fatalf("block %d moved from %s to %s, not to the new node", k, before, after)
			}
			moved++
		}
	}
	if moved < 60 || moved > 200 { // ~1/8 of 1000
		t.Errorf("%d of 1000 blocks moved to the new node, want about 125", moved)
	}
}

func TestPlanUrgent(t *testing.T) {
	t0 := time.Unix(1000, 0)
	lim := DefaultLimits
	lim.PeerRun, lim.AloneRun = 4, 8
	// 16 pieces: blocks of one piece; find pieces b owns against a, and
	// pieces a owns.
	mineB, mineA := owned("b", 16, "a", "b"), owned("a", 16, "a", "b")
	if len(mineB) < 2 || len(mineA) < 2 {
		t.Fatalf("test needs pieces of each: a=%v b=%v", mineA, mineB)
	}
	want := func(since time.Time, pieces ...int) []Want {
		var out []Want
		for _, i := range pieces {
			out = append(out, Want{Piece: i, Since: since})
		}
		return out
	}
	base := func() Snapshot {
		return Snapshot{Now: t0, NumPieces: 16, Self: "b", Have: bm(), InFlight: bm(), Claimed: bm(), Phase: Phase{Settled: true}}
	}
	seed := func(busy int) Peer { return Peer{ID: "a", Has: bm(span(0, 16)...), Data: true, Busy: busy} }
	tests := []struct {
		name string
		edit func(*Snapshot)
		want []Fetch
	}{
		{
			name: "alone: the wanted pieces from the registry, a request each, and nothing else while they are on their way",
			edit: func(s *Snapshot) { s.Urgent = want(t0, 9, 10) },
			want: []Fetch{{First: 9, Count: 1, Why: "range"}, {First: 10, Count: 1, Why: "range"}},
		},
		{
			name: "the reader's pieces arrived: the rest of the blob resumes",
			edit: func(s *Snapshot) { s.Urgent = want(t0, 9, 10); s.Have = bm(9, 10) },
			want: []Fetch{{First: 0, Count: 1, Why: "alone"}, {First: 1, Count: 1, Why: "alone"}},
		},
		{
			name: "present or in flight: not fetched again",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0, 9, 10, 11)
				s.Have, s.InFlight, s.OriginInFlight, s.OriginBusy = bm(9), bm(span(0, 2)...), bm(span(0, 2)...), 2
			},
			want: []Fetch{{First: 10, Count: 1, Why: "range"}, {First: 11, Count: 1, Why: "range"}},
		},
		{
			name: "a node has them: from it, even when its bulk slots are taken",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0, 12, 13)
				s.Peers = []Peer{seed(2)}
				s.InFlight = bm(span(0, 8)...)
			},
			want: []Fetch{{Peer: "a", First: 12, Count: 1, Why: "range"}, {Peer: "a", First: 13, Count: 1, Why: "range"}},
		},
		{
			name: "urgent slots taken too: wait for the node, not the registry",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0.Add(-time.Hour), 12)
				s.Peers = []Peer{seed(4)}
			},
		},
		{
			name: "a node has them and bulk slots are free: no bulk while the reader waits",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0, 14)
				s.Peers = []Peer{seed(0)}
			},
			want: []Fetch{{Peer: "a", First: 14, Count: 1, Why: "range"}},
		},
		{
			name: "no node has it, my block: the registry at once",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0, mineB[0])
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.OriginBusy = 2 // the share's requests do not hold it back
			},
			want: []Fetch{{First: mineB[0], Count: 1, Why: "range"}},
		},
		{
			name: "another node's block: wait for its claim, within the grace",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0.Add(-lim.UrgentGrace/2), mineA[0])
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.OriginBusy = 2
			},
		},
		{
			name: "another node's block and no claim after the grace: the registry",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0.Add(-lim.UrgentGrace), mineA[0])
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.OriginBusy = 2
			},
			want: []Fetch{{First: mineA[0], Count: 1, Why: "range"}},
		},
		{
			name: "claimed by another node: wait for it to arrive there",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0.Add(-time.Second), mineB[0])
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Claimed = bm(mineB[0])
				s.OriginBusy = 2
			},
		},
		{
			name: "claimed, and the claimer too slow: the registry",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0.Add(-lim.UrgentClaimWait), mineB[0])
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Claimed = bm(mineB[0])
				s.OriginBusy = 2
			},
			want: []Fetch{{First: mineB[0], Count: 1, Why: "range"}},
		},
		{
			name: "not settled: nothing from the registry for UrgentSettle",
			edit: func(s *Snapshot) { s.Settled = false; s.Urgent = want(t0.Add(-lim.UrgentSettle/2), 3) },
		},
		{
			name: "not settled after UrgentSettle: the registry",
			edit: func(s *Snapshot) { s.Settled = false; s.Urgent = want(t0.Add(-lim.UrgentSettle), 3) },
			want: []Fetch{{First: 3, Count: 1, Why: "range"}},
		},
		{
			name: "not settled, a node has it: from the node",
			edit: func(s *Snapshot) { s.Settled = false; s.Urgent = want(t0, 3); s.Peers = []Peer{seed(0)} },
			want: []Fetch{{Peer: "a", First: 3, Count: 1, Why: "range"}},
		},
		{
			name: "urgent registry requests capped on their own",
			edit: func(s *Snapshot) {
				s.Urgent = want(t0, 3, 5)
				s.UrgentBusy = lim.UrgentRequests - 1
				s.OriginBusy = 2
			},
			want: []Fetch{{First: 3, Count: 1, Why: "range"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := base()
			tc.edit(&s)
			peers := slices.Clone(s.Peers)
			got, _ := Plan(s, lim)
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("plan:\n got %+v\nwant %+v", got, tc.want)
			}
			for k := range peers {
				if s.Peers[k].Busy != peers[k].Busy {
					t.Fatal("Plan changed the snapshot's peers")
				}
			}
		})
	}
}
