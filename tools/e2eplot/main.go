// Command e2eplot draws the charts of the e2e results: for every results
// JSON file the e2e tests write (e2e/results/<name>.json), one SVG per image
// size and link of its cold-rollout runs, plotting the last node's
// completion time against N for Shoal P2P, direct registry pulls and the
// T* lower bound.
//
// It is a module of its own so that gonum.org/v1/plot and its font, LaTeX
// and PDF dependencies stay out of the shoal module; the Makefile builds it
// and runs it after the e2e targets.
//
//	e2eplot [-out DIR] RESULTS.json...
package main

import (
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"image/color"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

func main() {
	out := flag.String("out", "", "directory for the charts (default: beside each JSON file)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "usage: e2eplot [-out DIR] RESULTS.json...\n")
		flag.PrintDefaults()
	}
	flag.Parse()
	if flag.NArg() == 0 {
		flag.Usage()
		os.Exit(2)
	}
	for _, in := range flag.Args() {
		files, err := plotFile(in, *out)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2eplot: %v\n", err)
			os.Exit(1)
		}
		for _, f := range files {
			fmt.Println(f)
		}
	}
}

// plotFile writes the charts of one results file and returns their paths.
func plotFile(in, outDir string) ([]string, error) {
	runs, err := readRuns(in)
	if err != nil {
		return nil, err
	}
	if outDir == "" {
		outDir = filepath.Dir(in)
	}
	name := strings.TrimSuffix(filepath.Base(in), ".json")
	var files []string
	for _, c := range charts(runs) {
		f := filepath.Join(outDir, c.fileName(name))
		if err := c.save(f); err != nil {
			return files, fmt.Errorf("%s: %w", f, err)
		}
		files = append(files, f)
		if len(c.cdfs) == 0 {
			continue
		}
		f = filepath.Join(outDir, c.cdfFileName(name))
		if err := c.saveCDF(f); err != nil {
			return files, fmt.Errorf("%s: %w", f, err)
		}
		files = append(files, f)
	}
	return files, nil
}

// run is the part of an e2e Run (e2e/report_test.go) the charts use; the
// JSON names are that type's tags.
type run struct {
	Scenario   string  `json:"scenario"`
	Mode       string  `json:"mode"`
	N          int     `json:"nodes"`
	ImageBytes int64   `json:"imageBytes"`
	RateMbit   int     `json:"rateMbit"`
	DelayMs    int64   `json:"delayMs"`
	Max        float64 `json:"max"`
	TStar      float64 `json:"tStar"`
	// Optional: the median node and every node's completion time (the
	// CDF chart of TestScale's runs).
	P50     float64   `json:"p50"`
	Seconds []float64 `json:"seconds"`
	// P90 is written by TestScale only: its runs get the CDF chart.
	P90 float64 `json:"p90"`
}

// required are the keys every run must have. The e2e tests and this tool
// live in different modules, so a field renamed on one side is caught here,
// by name, instead of being drawn as a line of zeros.
var required = []string{"scenario", "mode", "nodes", "imageBytes", "rateMbit", "delayMs", "max", "tStar"}

// readRuns reads a results file: a JSON array of runs.
func readRuns(path string) ([]run, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw []map[string]json.RawMessage
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s: not a JSON array of runs: %w", path, err)
	}
	runs := make([]run, len(raw))
	for i, m := range raw {
		var missing []string
		for _, k := range required {
			if _, ok := m[k]; !ok {
				missing = append(missing, k)
			}
		}
		if len(missing) > 0 {
			return nil, fmt.Errorf("%s: run %d lacks %s", path, i, strings.Join(missing, ", "))
		}
		// Decoding the object again into run gives its types and checks
		// them (a string where a number belongs is an error).
		obj, err := json.Marshal(m)
		if err != nil {
			return nil, err
		}
		d := json.NewDecoder(bytes.NewReader(obj))
		if err := d.Decode(&runs[i]); err != nil {
			return nil, fmt.Errorf("%s: run %d: %w", path, i, err)
		}
	}
	if len(runs) == 0 {
		return nil, errors.New(path + ": no runs")
	}
	return runs, nil
}

// link is one chart: an image size over one kind of link.
type link struct {
	size     int64
	rateMbit int
	delayMs  int64
}

// chart is the data of one SVG: points sorted by N.
type chart struct {
	link
	p2p, direct, tStar, p50 plotter.XYs
	// cdfs: every node's completion time ÷ T*, one curve per N, for
	// runs of at least cdfMinNodes nodes.
	cdfs []cdf
}

type cdf struct {
	n   int
	xys plotter.XYs
}

// cdfMinNodes: smaller runs have too few nodes for a distribution.
const cdfMinNodes = 16

// charts groups the cold-rollout runs by image size and link, in the order
// each first appears; other scenarios (faults, late joiners) are no curve
// against N and have no chart.
func charts(runs []run) []chart {
	var out []chart
	for _, r := range runs {
		if r.Scenario != "cold" {
			continue
		}
		k := link{r.ImageBytes, r.RateMbit, r.DelayMs}
		i := slices.IndexFunc(out, func(c chart) bool { return c.link == k })
		if i < 0 {
			out = append(out, chart{link: k})
			i = len(out) - 1
		}
		c := &out[i]
		pt := plotter.XY{X: float64(r.N), Y: r.Max}
		switch r.Mode {
		case "p2p":
			c.p2p = append(c.p2p, pt)
			c.tStar = append(c.tStar, plotter.XY{X: float64(r.N), Y: r.TStar})
			// Runs with every node's time (TestScale) also get the median
			// node's curve and a CDF chart.
			if r.P90 > 0 && len(r.Seconds) >= cdfMinNodes && r.TStar > 0 {
				c.p50 = append(c.p50, plotter.XY{X: float64(r.N), Y: r.P50})
				c.cdfs = append(c.cdfs, cdf{r.N, cdfPoints(r.Seconds, r.TStar)})
			}
		case "direct":
			c.direct = append(c.direct, pt)
		}
	}
	byN := func(a, b plotter.XY) int { return cmp.Compare(a.X, b.X) }
	for i := range out {
		slices.SortStableFunc(out[i].p2p, byN)
		slices.SortStableFunc(out[i].direct, byN)
		slices.SortStableFunc(out[i].tStar, byN)
		slices.SortStableFunc(out[i].p50, byN)
	}
	return out
}

// cdfPoints is the empirical CDF of secs ÷ tStar: the k-th fastest node
// at (t_k/T*, k/n).
func cdfPoints(secs []float64, tStar float64) plotter.XYs {
	s := slices.Clone(secs)
	slices.Sort(s)
	out := make(plotter.XYs, len(s))
	for k, v := range s {
		out[k] = plotter.XY{X: v / tStar, Y: float64(k+1) / float64(len(s))}
	}
	return out
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

// fileName is <name>-<size>mib-<rate>mbit[-<delay>ms].svg, the names the
// READMEs link to.
func (c chart) fileName(name string) string {
	f := fmt.Sprintf("%s-%dmib-%dmbit", name, c.size>>20, c.rateMbit)
	if c.delayMs > 0 {
		f += fmt.Sprintf("-%dms", c.delayMs)
	}
	return f + ".svg"
}

func (c chart) title() string {
	t := fmt.Sprintf("Cold rollout, %s image, %d Mbit/s links", mib(c.size), c.rateMbit)
	if c.delayMs > 0 {
		t += fmt.Sprintf(", +%d ms", c.delayMs)
	}
	return t
}

func (c chart) save(path string) error {
	p := plot.New()
	p.Title.Text = c.title()
	p.X.Label.Text = "nodes N"
	p.Y.Label.Text = "completion time of the last node (s)"
	lastName := "Shoal P2P"
	if len(c.p50) > 0 {
		p.Y.Label.Text = "completion time (s)"
		lastName = "Shoal P2P (last node)"
	}
	p.Add(plotter.NewGrid())
	for _, s := range []struct {
		name string
		xys  plotter.XYs
		c    color.RGBA
	}{{lastName, c.p2p, color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 255}},
		{"Shoal P2P (median node)", c.p50, color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 255}},
		{"direct from registry", c.direct, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 255}},
		{"T* lower bound", c.tStar, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 255}}} {
		if len(s.xys) == 0 {
			continue
		}
		l, pts, err := plotter.NewLinePoints(s.xys)
		if err != nil {
			return err
		}
		l.Color, pts.Color = s.c, s.c
		p.Add(l, pts)
		p.Legend.Add(s.name, l, pts)
	}
	p.Legend.Top, p.Legend.Left = true, true
	p.Y.Min = 0
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}

// cdfFileName is fileName with -cdf before the extension.
func (c chart) cdfFileName(name string) string {
	return strings.TrimSuffix(c.fileName(name), ".svg") + "-cdf.svg"
}

// saveCDF draws the completion-time CDFs, one curve per N.
func (c chart) saveCDF(path string) error {
	p := plot.New()
	p.Title.Text = strings.Replace(c.title(), "Cold rollout", "Completion times", 1)
	p.X.Label.Text = "completion time ÷ T*"
	p.Y.Label.Text = "fraction of nodes done"
	p.Add(plotter.NewGrid())
	palette := []color.RGBA{{R: 0x1f, G: 0x77, B: 0xb4, A: 255}, {R: 0xff, G: 0x7f, B: 0x0e, A: 255}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 255},
		{R: 0xd6, G: 0x27, B: 0x28, A: 255}, {R: 0x94, G: 0x67, B: 0xbd, A: 255}, {R: 0x8c, G: 0x56, B: 0x4b, A: 255}}
	for i, d := range c.cdfs {
		l, err := plotter.NewLine(d.xys)
		if err != nil {
			return err
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("N = %d", d.n), l)
	}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs = -vg.Points(10)
	p.Y.Min, p.Y.Max = 0, 1
	p.X.Min = 0
	return p.Save(7*vg.Inch, 4.5*vg.Inch, path)
}
