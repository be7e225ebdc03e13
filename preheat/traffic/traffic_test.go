package traffic

import (
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
		reg, p := Delta(tc.prevStart, tc.prevReg, tc.prevP, tc.cur)
		if reg != tc.wantReg || p != tc.wantP {
			t.Errorf("%s: %d/%d, want %d/%d", tc.name, reg, p, tc.wantReg, tc.wantP)
		}
	}
}
