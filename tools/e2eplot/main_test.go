package main

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/plot/plotter"
)

func writeJSON(t *testing.T, s string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "r.json")
	if err := os.WriteFile(f, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

const okRun = `{"scenario":"cold","mode":"p2p","nodes":4,"imageBytes":67108864,"rateMbit":200,"delayMs":0,"max":3.2,"tStar":2.68,"note":"extra keys are fine"}`

func TestReadRuns(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    []run
		wantErr string // substring; "" = no error
	}{
		{"one run, unknown keys ignored", "[" + okRun + "]",
			[]run{{Scenario: "cold", Mode: "p2p", N: 4, ImageBytes: 64 << 20, RateMbit: 200, Max: 3.2, TStar: 2.68}}, ""},
		{"renamed key is named", `[{"scenario":"cold","mode":"p2p","n":4,"imageBytes":1,"rateMbit":200,"delayMs":0,"max":1,"tStar":1}]`,
			nil, "run 0 lacks nodes"},
		{"every missing key is named", `[` + okRun + `,{"scenario":"cold","mode":"p2p","nodes":1,"imageBytes":1,"rateMbit":1,"delayMs":0}]`,
			nil, "run 1 lacks max, tStar"},
		{"wrong type", `[{"scenario":"cold","mode":"p2p","nodes":"4","imageBytes":1,"rateMbit":200,"delayMs":0,"max":1,"tStar":1}]`,
			nil, "run 0:"},
		{"not an array", `{"runs":[]}`, nil, "not a JSON array"},
		{"truncated", "[" + okRun, nil, "not a JSON array"},
		{"empty", `[]`, nil, "no runs"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := readRuns(writeJSON(t, tt.in))
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestCharts(t *testing.T) {
	const m64, m512 = 64 << 20, 512 << 20
	runs := []run{
		{Scenario: "cold", Mode: "p2p", N: 8, ImageBytes: m64, RateMbit: 200, Max: 5, TStar: 2.7},
		{Scenario: "cold", Mode: "direct", N: 8, ImageBytes: m64, RateMbit: 200, Max: 22},
		{Scenario: "fault-tracker-killed", Mode: "p2p", N: 4, ImageBytes: m64, RateMbit: 200, Max: 9, TStar: 2.7},
		{Scenario: "cold", Mode: "p2p", N: 1, ImageBytes: m64, RateMbit: 200, Max: 2.8, TStar: 2.7},
		{Scenario: "cold", Mode: "p2p", N: 4, ImageBytes: m512, RateMbit: 200, Max: 26, TStar: 21},
		{Scenario: "cold", Mode: "p2p", N: 4, ImageBytes: m64, RateMbit: 200, DelayMs: 20, Max: 4, TStar: 2.7},
	}
	got := charts(runs)
	want := []struct {
		file               string
		p2p, direct, tStar plotter.XYs
	}{
		{"m-64mib-200mbit.svg", plotter.XYs{{X: 1, Y: 2.8}, {X: 8, Y: 5}}, plotter.XYs{{X: 8, Y: 22}}, plotter.XYs{{X: 1, Y: 2.7}, {X: 8, Y: 2.7}}},
		{"m-512mib-200mbit.svg", plotter.XYs{{X: 4, Y: 26}}, nil, plotter.XYs{{X: 4, Y: 21}}},
		{"m-64mib-200mbit-20ms.svg", plotter.XYs{{X: 4, Y: 4}}, nil, plotter.XYs{{X: 4, Y: 2.7}}},
	}
	if len(got) != len(want) {
		t.Fatalf("got %d charts, want %d (fault runs have none): %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if f := g.fileName("m"); f != w.file {
			t.Errorf("chart %d: file %s, want %s", i, f, w.file)
		}
		if !slices.Equal(g.p2p, w.p2p) || !slices.Equal(g.direct, w.direct) || !slices.Equal(g.tStar, w.tStar) {
			t.Errorf("%s: p2p %v direct %v T* %v, want %v %v %v", w.file, g.p2p, g.direct, g.tStar, w.p2p, w.direct, w.tStar)
		}
	}
	if ti := got[2].title(); ti != "Cold rollout, 64.0 MiB image, 200 Mbit/s links, +20 ms" {
		t.Errorf("title %q", ti)
	}
}

// The charts committed in e2e/results are what this tool draws from the
// JSON beside them: a chart is never stale against its data, and the
// tool's output is the one the READMEs show.
func TestCommittedCharts(t *testing.T) {
	results := filepath.Join("..", "..", "e2e", "results")
	ins, err := filepath.Glob(filepath.Join(results, "*.json"))
	if err != nil || len(ins) == 0 {
		t.Fatalf("no results JSON in %s (%v)", results, err)
	}
	out := t.TempDir()
	drawn := map[string]bool{}
	for _, in := range ins {
		files, err := plotFile(in, out)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range files {
			drawn[filepath.Base(f)] = true
			got, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(filepath.Join(results, filepath.Base(f)))
			if err != nil {
				t.Errorf("%s: drawn from %s but not committed: %v", filepath.Base(f), filepath.Base(in), err)
				continue
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s differs from what e2eplot draws from %s: regenerate it (make e2eplot && bin/e2eplot e2e/results/%s)", filepath.Base(f), filepath.Base(in), filepath.Base(in))
			}
		}
	}
	svgs, _ := filepath.Glob(filepath.Join(results, "*.svg"))
	for _, s := range svgs {
		if !drawn[filepath.Base(s)] {
			t.Errorf("%s: committed chart without results JSON it is drawn from", filepath.Base(s))
		}
	}
}

// TestScale's runs (p90 and every node's time) get the median node's
// curve and a CDF of completion ÷ T*.
func TestScaleCharts(t *testing.T) {
	secs := make([]float64, 16)
	for i := range secs {
		secs[i] = float64(20 + i)
	}
	runs := []run{{Scenario: "cold", Mode: "p2p", N: 16, ImageBytes: 64 << 20, RateMbit: 10, Max: 35, TStar: 20, P50: 27, P90: 33, Seconds: secs}}
	got := charts(runs)
	if len(got) != 1 || len(got[0].cdfs) != 1 || !slices.Equal(got[0].p50, plotter.XYs{{X: 16, Y: 27}}) {
		t.Fatalf("charts = %+v: want one chart with a p50 point and a CDF", got)
	}
	c := got[0].cdfs[0].xys
	if c[0] != (plotter.XY{X: 1, Y: 1.0 / 16}) || c[15] != (plotter.XY{X: 35.0 / 20, Y: 1}) {
		t.Errorf("CDF ends %v, %v", c[0], c[15])
	}
	if f := got[0].cdfFileName("scale"); f != "scale-64mib-10mbit-cdf.svg" {
		t.Errorf("CDF file %s", f)
	}
}
