package main

import (
	"fmt"
	"image/color"
	"math"
	"slices"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
)

// Charts are SVG through gonum.org/v1/plot, as tools/e2eplot draws the
// e2e charts; this module keeps the plotting library out of shoal's.

var palette = []color.RGBA{
	{R: 0x1f, G: 0x77, B: 0xb4, A: 255}, {R: 0xd6, G: 0x27, B: 0x28, A: 255}, {R: 0x2c, G: 0xa0, B: 0x2c, A: 255},
	{R: 0xff, G: 0x7f, B: 0x0e, A: 255}, {R: 0x94, G: 0x67, B: 0xbd, A: 255}, {R: 0x8c, G: 0x56, B: 0x4b, A: 255},
	{R: 0x17, G: 0xbe, B: 0xcf, A: 255}, {R: 0x7f, G: 0x7f, B: 0x7f, A: 255},
}

// validationChart: simulated against measured slowest-node time, with
// the ±15 % band.
func validationChart(vs []validation, path string) error {
	p := plot.New()
	p.Title.Text = "Simulated vs measured slowest node (netns cells)"
	p.X.Label.Text = "measured max (s)"
	p.Y.Label.Text = "simulated max (s, mean of seeds)"
	p.X.Scale, p.Y.Scale = plot.LogScale{}, plot.LogScale{}
	p.X.Tick.Marker, p.Y.Tick.Marker = plot.LogTicks{Prec: -1}, plot.LogTicks{Prec: -1}
	var link, cpu plotter.XYs
	hi := 1.0
	for _, v := range vs {
		if math.IsNaN(v.cell.Max) || math.IsInf(v.cell.Max, 0) || math.IsInf(v.SimMax, 0) {
			continue
		}
		pt := plotter.XY{X: v.cell.Max, Y: v.SimMax}
		hi = max(hi, v.cell.Max, v.SimMax)
		if v.CPUBound {
			cpu = append(cpu, pt)
		} else {
			link = append(link, pt)
		}
	}
	for i, band := range []float64{1, 0.85, 1.15} {
		l, err := plotter.NewLine(plotter.XYs{{X: 1, Y: band}, {X: hi * 1.2, Y: hi * 1.2 * band}})
		if err != nil {
			return err
		}
		l.Color = color.Gray{Y: 0x60}
		if i > 0 {
			l.Dashes = []vg.Length{vg.Points(3), vg.Points(3)}
		} else {
			p.Legend.Add("sim = measured (dashed: ±15 %)", l)
		}
		p.Add(l)
	}
	for i, s := range []struct {
		name string
		xy   plotter.XYs
	}{{"link-bound cells", link}, {"CPU-bound cells (2-core host)", cpu}} {
		if len(s.xy) == 0 {
			continue
		}
		sc, err := plotter.NewScatter(s.xy)
		if err != nil {
			return err
		}
		sc.Color = palette[i]
		sc.Radius = vg.Points(3)
		p.Add(sc)
		p.Legend.Add(s.name, sc)
	}
	p.Legend.Top, p.Legend.Left = true, true
	return p.Save(6*vg.Inch, 5*vg.Inch, path)
}

// cdfChart: fraction of nodes done against time ÷ T*, one line per run.
func cdfChart(title string, rs []Result, path string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "completion time ÷ T*"
	p.Y.Label.Text = "fraction of nodes done"
	for i, r := range rs {
		if len(r.Seconds) == 0 {
			continue
		}
		xs := slices.Clone(r.Seconds)
		slices.Sort(xs)
		total := float64(len(xs) + r.Unfinished)
		var pts plotter.XYs
		step := max(1, len(xs)/400)
		for k := 0; k < len(xs); k += step {
			pts = append(pts, plotter.XY{X: xs[k] / r.TStar, Y: float64(k+1) / total})
		}
		pts = append(pts, plotter.XY{X: xs[len(xs)-1] / r.TStar, Y: float64(len(xs)) / total})
		l, err := plotter.NewLine(pts)
		if err != nil {
			return err
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(fmt.Sprintf("%s, N=%d", r.Name, r.N), l)
	}
	p.Legend.Top, p.Legend.Left = false, false
	p.Legend.XOffs = -vg.Points(5)
	p.Legend.YOffs = vg.Points(20)
	return p.Save(7*vg.Inch, 5*vg.Inch, path)
}

// ratioChart: p50 and max ÷ T* against N, one pair of lines per series.
func ratioChart(title string, series map[string][]Result, path string) error {
	p := plot.New()
	p.Title.Text = title
	p.X.Label.Text = "N (nodes)"
	p.Y.Label.Text = "÷ T*"
	p.X.Scale = plot.LogScale{}
	p.X.Tick.Marker = plot.LogTicks{Prec: -1}
	names := make([]string, 0, len(series))
	for k := range series {
		names = append(names, k)
	}
	slices.Sort(names)
	for i, name := range names {
		rs := slices.Clone(series[name])
		slices.SortFunc(rs, func(a, b Result) int { return a.N - b.N })
		var p50, mx plotter.XYs
		for _, r := range rs {
			if len(r.Seconds) == 0 {
				continue
			}
			p50 = append(p50, plotter.XY{X: float64(r.N), Y: r.P50 / r.TStar})
			mx = append(mx, plotter.XY{X: float64(r.N), Y: r.Max / r.TStar})
		}
		for j, s := range []plotter.XYs{p50, mx} {
			if len(s) == 0 {
				continue
			}
			l, pts, err := plotter.NewLinePoints(s)
			if err != nil {
				return err
			}
			l.Color, pts.Color = palette[i%len(palette)], palette[i%len(palette)]
			if j == 1 {
				l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
				p.Legend.Add(name+" max", l)
			} else {
				p.Legend.Add(name+" p50", l)
			}
			p.Add(l, pts)
		}
	}
	goal, err := plotter.NewLine(plotter.XYs{{X: 1, Y: 1.05}, {X: 10000, Y: 1.05}})
	if err != nil {
		return err
	}
	goal.Color = color.Gray{Y: 0x80}
	goal.Dashes = []vg.Length{vg.Points(1), vg.Points(2)}
	p.Add(goal)
	p.Legend.Add("p50 goal 1.05", goal)
	p.Legend.Top, p.Legend.Left = true, true
	return p.Save(7*vg.Inch, 5*vg.Inch, path)
}
