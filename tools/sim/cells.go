package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
)

// cell is one measured netns rollout the model is checked against.
type cell struct {
	Source   string  `json:"source"`
	N        int     `json:"nodes"`
	MiB      int64   `json:"imageMiB"`
	Mbit     float64 `json:"rateMbit"`
	P50      float64 `json:"measuredP50"` // NaN: not reported
	Max      float64 `json:"measuredMax"`
	Egress   float64 `json:"measuredEgress"`
	CPUBound bool    `json:"cpuBound"`
	Note     string  `json:"note,omitempty"`
	// Scale: a TestScale cell (e2e/results/scale.json): the agents' stall
	// floor of that run and this build's data-path settings.
	Scale bool `json:"scale,omitempty"`
}

// e2eRun is the part of an e2e Run (e2e/report_test.go) read here.
type e2eRun struct {
	Mode       string  `json:"mode"`
	N          int     `json:"nodes"`
	ImageBytes int64   `json:"imageBytes"`
	RateMbit   float64 `json:"rateMbit"`
	P50        float64 `json:"p50"`
	Max        float64 `json:"max"`
	Egress     float64 `json:"registryEgressPerImage"`
	HostIdle   float64 `json:"hostIdle"` // TestScale only
}

// measuredCells reads the e2e matrix results (HTTP data path, before the
// peer wire became mutual TLS) and adds this week's runs (mutual TLS).
// Cells where e2e/README.md found the 2-core host, not the links, binding
// (vmstat 0 % idle: N ≥ 16 at 200 Mbit/s, and the recent N ≥ 16 runs)
// are marked CPU-bound.
func measuredCells(e2eDir string) ([]cell, error) {
	var out []cell
	for _, f := range []string{"matrix.json", "matrix-50mbit.json", "matrix-512.json"} {
		b, err := os.ReadFile(filepath.Join(e2eDir, f))
		if err != nil {
			return nil, err
		}
		var runs []e2eRun
		if err := json.Unmarshal(b, &runs); err != nil {
			return nil, fmt.Errorf("%s: %w", f, err)
		}
		for _, r := range runs {
			if r.Mode != "p2p" {
				continue
			}
			c := cell{Source: "e2e/results/" + f, N: r.N, MiB: (r.ImageBytes + 1<<19) >> 20, Mbit: r.RateMbit,
				P50: r.P50, Max: r.Max, Egress: r.Egress}
			c.CPUBound = r.RateMbit >= 200 && r.N >= 16 || r.N >= 24
			out = append(out, c)
		}
	}
	// TestScale's cells (make bench-scale), when they have been run.
	if b, err := os.ReadFile(filepath.Join(e2eDir, "scale.json")); err == nil {
		var runs []e2eRun
		if err := json.Unmarshal(b, &runs); err != nil {
			return nil, fmt.Errorf("scale.json: %w", err)
		}
		for _, r := range runs {
			out = append(out, cell{Source: "e2e/results/scale.json", N: r.N, MiB: (r.ImageBytes + 1<<19) >> 20, Mbit: r.RateMbit,
				P50: r.P50, Max: r.Max, Egress: r.Egress, CPUBound: r.HostIdle < 0.4, Scale: true})
		}
	}
	nan := math.NaN()
	week := "this week (mutual TLS peer wire), 64 MiB in 4 layers, cold"
	out = append(out,
		cell{Source: week, N: 8, MiB: 64, Mbit: 50, P50: nan, Max: 17.9, Egress: nan},
		cell{Source: week, N: 16, MiB: 64, Mbit: 50, P50: nan, Max: 27.2, Egress: nan, CPUBound: true},
		cell{Source: week, N: 24, MiB: 64, Mbit: 50, P50: 36.3, Max: 44.1, Egress: nan, CPUBound: true},
		cell{Source: week, N: 32, MiB: 64, Mbit: 50, P50: nan, Max: 54.1, Egress: nan, CPUBound: true},
		cell{Source: week, N: 8, MiB: 64, Mbit: 20, P50: nan, Max: 45.0, Egress: nan},
		cell{Source: week, N: 32, MiB: 64, Mbit: 20, P50: nan, Max: math.Inf(1), Egress: nan, CPUBound: true,
			Note: "livelock: no node finished in 11 min; each got ~3 MiB from peers, 0 bytes of its registry share"},
	)
	return out, nil
}

func (c cell) params(seed uint64) Params {
	p := DefaultParams()
	p.Name = fmt.Sprintf("N=%d %dMiB@%gMbit", c.N, c.MiB, c.Mbit)
	p.N, p.Image, p.Seed = c.N, c.MiB<<20, seed
	p.Up, p.Down, p.RegistryUp = mbit(c.Mbit), mbit(c.Mbit), mbit(c.Mbit)
	p.Limit = 900
	// Measured before the registry refused duplicate shares.
	p.NoShareDedupe = !c.Scale
	if c.Scale {
		p.StallTimeout = ScaleStallTimeout
		p.SendBuffer = 2 * DataSendBuffer
		p.MaxConns = 50
	}
	return p
}

// The scale cells' settings: e2e TestScale's -scale.stall default and
// agent/internal/peer's DataSendBuffer (doubled by the kernel) and
// MaxConnsPerTorrent (50).
const (
	ScaleStallTimeout = 20
	DataSendBuffer    = 128 << 10
)
