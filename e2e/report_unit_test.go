package e2e

import (
	"math"
	"testing"
)

// The report's arithmetic runs without namespaces (plain go test).
func TestReportMath(t *testing.T) {
	const mibps200 = 200e6 / 8 // bytes/s of a 200 Mbit/s link
	f := float64(64 << 20)
	tests := []struct {
		name string
		got  float64
		want float64
	}{
		{"T* N=1 is one image through one link", tStar(f, 1, mibps200, mibps200, mibps200), f / mibps200},
		{"T* N=16, equal links: the registry's uplink binds", tStar(f, 16, mibps200, mibps200, mibps200), f / mibps200},
		{"T* N=16, slow node uplinks: their sum binds", tStar(f, 16, mibps200, mibps200/10, mibps200), 16 * f / (mibps200 + 16*mibps200/10)},
		{"predicted direct N=16 64 MiB 200 Mbit/s", predictedDirect(Run{Scenario: "cold", Mode: "p2p", N: 16, ImageBytes: 64 << 20, RateMbit: 200}).Max, 16 * f / mibps200},
		{"percentile p95 of 20 values", percentile([]float64{20, 19, 18, 17, 16, 15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1}, .95), 19},
	}
	for _, tt := range tests {
		if math.Abs(tt.got-tt.want) > 1e-9*math.Max(1, tt.want) {
			t.Errorf("%s: got %v, want %v", tt.name, tt.got, tt.want)
		}
	}
	r := predictedDirect(Run{Scenario: "cold", Mode: "p2p", N: 24, ImageBytes: 512 << 20, RateMbit: 200})
	if r.Mode != "direct" || r.RegistryEgress != 24*(512<<20) || r.EgressRatio != 24 || r.Note == "" {
		t.Errorf("predictedDirect = %+v: want a direct run, 24× egress, a note saying it was not run", r)
	}
}

// The /proc parsers TestScale's CPU and memory numbers rest on.
func TestProcParsers(t *testing.T) {
	total, idle, err := parseProcStat("cpu  100 5 50 800 20 1 4 0 30 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n")
	if err != nil || total != 980 || idle != 820 {
		t.Errorf("parseProcStat = %d, %d, %v; want 980 (guest not added twice), 820 (idle + iowait)", total, idle, err)
	}
	if _, _, err := parseProcStat("intr 1 2 3\n"); err == nil {
		t.Error("parseProcStat accepted a file without the cpu line")
	}
	// A command name with spaces and parentheses; utime 250, stime 150.
	secs, err := parsePidStat("4242 (shoal (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 150 0 0 20 0 12 0 100 0 0")
	if err != nil || math.Abs(secs-4) > 1e-9 {
		t.Errorf("parsePidStat = %v, %v; want 4 s", secs, err)
	}
	if _, err := parsePidStat("4242 (shoal) S 1"); err == nil {
		t.Error("parsePidStat accepted a short line")
	}
	if got := parseStatusKB("Name:\tshoal\nVmHWM:\t  2048 kB\nVmRSS:\t  1024 kB\n", "VmRSS:"); got != 1024<<10 {
		t.Errorf("VmRSS = %d, want %d", got, 1024<<10)
	}
}
