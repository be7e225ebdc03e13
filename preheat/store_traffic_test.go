package preheat

import (
	"context"
	"testing"
	"time"
)

func TestTrafficDelta(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	s0 := t0.Format(time.RFC3339Nano)
	for _, tc := range []struct {
		name           string
		prevStart      string
		prevReg, prevP int64
		cur            NodeTraffic
		wantReg, wantP int64
	}{
		{"same process: the difference", s0, 100, 50, NodeTraffic{StartedAt: t0, FromRegistry: 150, FromPeers: 80}, 50, 30},
		{"restarted agent, fresh: all it counted", s0, 100, 50, NodeTraffic{StartedAt: t0.Add(time.Hour), FromRegistry: 7, FromPeers: 3, Fresh: true}, 7, 3},
		{"first report of an old agent: baseline only", "", 0, 0, NodeTraffic{StartedAt: t0, FromRegistry: 1 << 40, FromPeers: 1 << 40}, 0, 0},
		{"first report of a fresh agent", "", 0, 0, NodeTraffic{StartedAt: t0, FromRegistry: 10, FromPeers: 20, Fresh: true}, 10, 20},
		{"counters went down: nothing", s0, 100, 50, NodeTraffic{StartedAt: t0, FromRegistry: 90, FromPeers: 60}, 0, 0},
	} {
		reg, p := trafficDelta(tc.prevStart, tc.prevReg, tc.prevP, tc.cur)
		if reg != tc.wantReg || p != tc.wantP {
			t.Errorf("%s: %d/%d, want %d/%d", tc.name, reg, p, tc.wantReg, tc.wantP)
		}
	}
}

// Both stores sum node reports into the same per-minute points.
func TestStoreTraffic(t *testing.T) {
	ctx := context.Background()
	for name, mk := range storeFactories() {
		t.Run(name, func(t *testing.T) {
			s := mk(t)
			now := time.Now().Truncate(time.Minute).Add(10 * time.Second)
			started := now.Add(-30 * time.Second)
			rec := func(node string, at time.Time, reg, peers int64) {
				t.Helper()
				if err := s.RecordTraffic(ctx, node, NodeTraffic{StartedAt: started, FromRegistry: reg, FromPeers: peers, Fresh: true}, at, time.Hour); err != nil {
					t.Fatal(err)
				}
			}
			rec("a", now, 100, 0)
			rec("b", now, 0, 100)
			rec("a", now.Add(time.Second), 150, 10) // +50 reg, +10 peers
			rec("a", now.Add(time.Minute), 150, 40) // next minute: +30 peers
			rec("b", now.Add(time.Minute), 0, 100)  // nothing new
			pts, err := s.Traffic(ctx, now.Add(-time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			if len(pts) != 2 || pts[0].FromRegistry != 150 || pts[0].FromPeers != 110 || pts[1].FromRegistry != 0 || pts[1].FromPeers != 30 ||
				!pts[0].Minute.Equal(now.Truncate(time.Minute)) {
				t.Fatalf("points %+v", pts)
			}
			if pts, _ := s.Traffic(ctx, now.Add(time.Minute)); len(pts) != 1 {
				t.Fatalf("since filter: %+v", pts)
			}
		})
	}
}
