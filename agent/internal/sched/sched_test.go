package sched

import (
	"reflect"
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

func TestPlan(t *testing.T) {
	t0 := time.Unix(1000, 0)
	lim := Limits{PerPeer: 2, PeerRun: 4, OriginRequests: 2, OriginRun: 2, AloneRun: 5, SwarmOrigin: 4, StealAfter: time.Second, StealStagger: 100 * time.Millisecond}
	base := func() Snapshot {
		return Snapshot{Now: t0, NumPieces: 8, Self: "b", Have: bm(), InFlight: bm(), Claimed: bm(), Settled: true}
	}
	tests := []struct {
		name string
		edit func(*Snapshot)
		want []Fetch
		idle time.Time
	}{
		{
			name: "alone at first: runs of OriginRun",
			edit: func(s *Snapshot) {},
			want: []Fetch{{First: 0, Count: 2}, {First: 2, Count: 2}},
		},
		{
			name: "alone for a while: longer runs, up to AloneRun",
			edit: func(s *Snapshot) { s.AloneRun = 64 },
			want: []Fetch{{First: 0, Count: 5}, {First: 5, Count: 3}},
		},
		{
			name: "alone, part present: one request per gap",
			edit: func(s *Snapshot) { s.Have = bm(2, 3, 6); s.AloneRun = 8 },
			want: []Fetch{{First: 0, Count: 2}, {First: 4, Count: 2}},
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
			name: "too few pieces for blocks: one piece per node in turn",
			edit: func(s *Snapshot) {
				// 8 pieces, 4 nodes: blocks of 2; 8 nodes would get blocks of 1.
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}, {ID: "c", Has: bm(), Data: true}, {ID: "d", Has: bm(), Data: true}}
			},
			// b has rank 1 of {a, b, c, d}: block 1 = pieces 2, 3; block 5 would be beyond.
			want: []Fetch{{First: 2, Count: 2}},
		},
		{
			name: "swarm of two: only my blocks, unclaimed, up to the swarm cap",
			edit: func(s *Snapshot) {
				// rank of b among {a, b} is 1: blocks 1 and 3 = pieces 2,3 and 6,7.
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Claimed = bm(0, 1)
			},
			want: []Fetch{{First: 2, Count: 2}},
		},
		{
			name: "swarm cap counts other nodes' claims and my own pieces in flight",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Claimed = bm(0, 1)
				s.OriginBusy, s.OriginPieces = 1, 2
				s.InFlight = bm(2, 3)
			},
		},
		{
			name: "claimed pieces a node already has do not count against the cap",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(0, 1, 4, 5), Data: true, Busy: 2}}
				s.Claimed = bm(0, 1, 4, 5)
				s.InFlight = bm(0, 1, 4, 5)
			},
			want: []Fetch{{First: 2, Count: 2}, {First: 6, Count: 2}},
		},
		{
			name: "share done and nothing at nodes: the idle clock starts",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(2, 3, 6, 7)
			},
			idle: t0,
		},
		{
			name: "idle, not long enough for rank 1",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(2, 3, 6, 7)
				s.IdleSince = t0.Add(-1050 * time.Millisecond)
			},
			idle: t0.Add(-1050 * time.Millisecond),
		},
		{
			name: "idle long enough: steal from the end, rank-th candidate",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(2, 3, 6, 7)
				s.IdleSince = t0.Add(-2 * time.Second)
			},
			// candidates from the end: 5, 4, 1, 0 → rank 1 takes 4.
			want: []Fetch{{First: 4, Count: 1}},
		},
		{
			name: "claimed pieces are not stolen",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(), Data: true}}
				s.Have = bm(2, 3, 6, 7)
				s.Claimed = bm(0, 1, 4, 5)
				s.IdleSince = t0.Add(-2 * time.Second)
			},
			// the claims fill the swarm cap: waiting, not idle
		},
		{
			name: "solo: every missing piece no node has, whoever's share",
			edit: func(s *Snapshot) {
				s.Peers = []Peer{{ID: "a", Has: bm(7), Data: false}}
				s.Claimed = bm(0, 1)
				s.Solo = true
				s.AloneRun = 64
			},
			want: []Fetch{{First: 0, Count: 5}, {First: 5, Count: 2}},
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
		s := Snapshot{Now: time.Unix(0, 0), NumPieces: 37, Self: self, Have: bm(), InFlight: bm(), Claimed: bm(), Peers: peers, Settled: true}
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
	const stall, deadline = 5 * time.Second, time.Minute
	tests := []struct {
		name       string
		now, last  time.Time
		busy, solo bool
		want       Verdict
	}{
		{"progressing", t0.Add(10 * time.Second), t0.Add(9 * time.Second), false, false, Wait},
		{"own fetch under way is not a stall", t0.Add(20 * time.Second), t0, true, false, Wait},
		{"nothing arrives: solo", t0.Add(10 * time.Second), t0.Add(4 * time.Second), false, false, GoSolo},
		{"nothing arrives while solo: give up", t0.Add(10 * time.Second), t0.Add(4 * time.Second), false, true, GiveUp},
		{"deadline beats everything", t0.Add(2 * time.Minute), t0.Add(2 * time.Minute), true, false, GiveUp},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Watch(tt.now, t0, tt.last, tt.busy, tt.solo, stall, deadline); got != tt.want {
				t.Errorf("Watch = %v, want %v", got, tt.want)
			}
		})
	}
}
