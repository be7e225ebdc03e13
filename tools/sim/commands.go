package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
)

func cmdValidate(args []string) error {
	fs := flag.NewFlagSet("validate", flag.ExitOnError)
	out := fs.String("out", "results", "directory for validation.{md,json,svg}")
	e2e := fs.String("e2e", "../../e2e/results", "the e2e results directory")
	seeds := fs.Int("seeds", 5, "seeds per cell")
	unf := fs.Float64("unfair", -1, "override Params.Unfairness")
	only := fs.String("cells", "all", "all, or scale: only TestScale's cells (e2e/results/scale.json), written as validation-scale.*")
	fs.Parse(args)
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400)
	}
	cells, err := measuredCells(*e2e)
	if err != nil {
		return err
	}
	stem := "validation"
	if *only == "scale" {
		stem = "validation-scale"
		cells = slices.DeleteFunc(cells, func(c cell) bool { return !c.Scale })
	}
	if err := mkdir(*out); err != nil {
		return err
	}
	tune := func(p *Params) {
		if *unf >= 0 {
			p.Unfairness = *unf
		}
	}
	vs := validate(cells, *seeds, tune, func(s string) { fmt.Fprintln(os.Stderr, s) })
	md := "# Simulated vs measured netns rollouts\n\n" + validationMarkdown(vs)
	if err := os.WriteFile(filepath.Join(*out, stem+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(*out, stem+".json"), vs); err != nil {
		return err
	}
	fmt.Print(md)
	return validationChart(vs, filepath.Join(*out, stem+".svg"))
}

// projections are the rollouts issue 20 asks about, with today's agent
// (agent/internal/peer: 50 connections per torrent, a 128 KiB data send
// buffer the kernel doubles; p2p.stallTimeout 5 s) and the registry's
// share dedupe. Images of 1 GiB and more are cut into bigPiece pieces
// (the registry's piecelength is a setting), so that every node holds a
// few hundred pieces at most and 10,000 nodes fit one core's afternoon.
func projections(which string, bigPiece int64) []Params {
	var ps []Params
	add := func(name string, n int, image int64, layers int, rate float64) {
		p := DefaultParams()
		p.Name, p.N, p.Image, p.Layers = name, n, image, layers
		p.Up, p.Down, p.RegistryUp = rate, rate, rate
		p.MaxConns, p.SendBuffer = 50, 2*DataSendBuffer
		if image >= 1<<30 {
			p.PieceLen = bigPiece
			p.Name += fmt.Sprintf(", %d MiB pieces", bigPiece>>20)
		}
		// A datacenter LAN: 0.5 ms between hosts; rates recomputed at
		// most every 2 ms (a new flow waits ≤ 2 ms for its share).
		p.RTT, p.Quantum = 0.0005, 0.002
		p.Limit = 3600
		ps = append(ps, p)
	}
	for _, n := range []int{1000, 10000} {
		for _, img := range []int64{64 << 20, 1 << 30} {
			name := fmt.Sprintf("%s@1Gbit", size(img))
			if which == "" || slices.Contains(strings.Split(which, ","), fmt.Sprintf("%d/%d", n, img>>20)) {
				add(name, n, img, 4, mbit(1000))
			}
		}
	}
	if which == "" || slices.Contains(strings.Split(which, ","), "kraken") {
		// Kraken's published run: a 3 GB image in 2 layers to 2,600
		// hosts, each agent limited to 300 MB/s (their registry side
		// is several origins; here one registry with the same 300 MB/s).
		add("kraken 3GB/2 layers@300MB/s", 2600, 3_000_000_000, 2, 300e6)
	}
	return ps
}

func cmdProject(args []string) error {
	fs := flag.NewFlagSet("project", flag.ExitOnError)
	out := fs.String("out", "results", "directory for projections.{md,json} and charts")
	which := fs.String("only", "", "comma list of N/MiB (1000/64, 10000/1024) or kraken; empty: all")
	tag := fs.String("tag", "projections", "file name stem")
	bigPiece := fs.Int64("bigpiece", 16<<20, "piece length for images of 1 GiB and more")
	fs.Parse(args)
	debug.SetGCPercent(400)
	if err := mkdir(*out); err != nil {
		return err
	}
	var ps []projection
	var rs []Result
	for _, p := range projections(*which, *bigPiece) {
		fmt.Fprintf(os.Stderr, "running %s N=%d\n", p.Name, p.N)
		r := newWorld(p).run()
		fmt.Fprintf(os.Stderr, "  p50 %.2f p99 %.2f max %.2f T* %.2f egress %.2f (%.0fs)\n", r.P50, r.P99, r.Max, r.TStar, r.Egress, r.WallSeconds)
		rs = append(rs, r)
		ps = append(ps, judge(r))
		// Written after every run so an interrupted set keeps its data.
		md := "# Projected rollouts\n\n" + projectionMarkdown(ps)
		if err := os.WriteFile(filepath.Join(*out, *tag+".md"), []byte(md), 0o644); err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(*out, *tag+".json"), ps); err != nil {
			return err
		}
		if err := cdfChart("Completion time CDF", rs, filepath.Join(*out, *tag+"-cdf.svg")); err != nil {
			return err
		}
	}
	return nil
}

// cmdScale runs the projection settings (64 MiB in 4 layers, 1 Gbit/s
// links, 0.5 ms RTT) at growing N and draws p50 and max ÷ T* against N,
// with the projections' runs of that image added from their JSON.
func cmdScale(args []string) error {
	fs := flag.NewFlagSet("scale", flag.ExitOnError)
	out := fs.String("out", "results", "directory")
	ns := fs.String("n", "10,30,100", "node counts")
	tag := fs.String("tag", "scale", "file name stem")
	sndbuf := fs.Float64("sndbuf", -1, "what-if: Params.SendBuffer (0: an upload slot is held until the response is delivered)")
	label := fs.String("label", "64 MiB@1Gbit", "series name")
	fs.Parse(args)
	debug.SetGCPercent(400)
	series := map[string][]Result{}
	var rs []Result
	for _, f := range strings.Split(*ns, ",") {
		var n int
		if _, err := fmt.Sscan(f, &n); err != nil {
			return fmt.Errorf("-n: %w", err)
		}
		p := projections("1000/64", 16<<20)[0]
		p.N = n
		p.Name = *label
		if *sndbuf >= 0 {
			p.SendBuffer = *sndbuf
		}
		r := newWorld(p).run()
		fmt.Fprintf(os.Stderr, "N=%d p50 %.2f max %.2f T* %.2f egress %.2f busy/node %.0f (%.0fs)\n", n, r.P50, r.Max, r.TStar, r.Egress, float64(r.Refused)/float64(n), r.WallSeconds)
		rs = append(rs, r)
	}
	for _, f := range []string{"projections.json", "p1000-64.json", "p10000-64.json"} {
		if *sndbuf >= 0 {
			break // the projections ran today's engine
		}
		var ps []projection
		if err := readJSON(filepath.Join(*out, f), &ps); err == nil {
			for _, p := range ps {
				if p.ImageBytes == 64<<20 {
					rs = append(rs, p.Result)
				}
			}
		}
	}
	series[*label] = rs
	// Other series already written (a what-if beside today's engine).
	for _, f := range []string{"scale.json", "scale-slotfix.json"} {
		if f == *tag+".json" {
			continue
		}
		var ps []projection
		if err := readJSON(filepath.Join(*out, f), &ps); err == nil && len(ps) > 0 {
			for _, p := range ps {
				series[p.Name] = append(series[p.Name], p.Result)
			}
		}
	}
	if err := writeJSON(filepath.Join(*out, *tag+".json"), judgeAll(rs)); err != nil {
		return err
	}
	md := "# p50 and max ÷ T* against N (64 MiB in 4 layers, 1 Gbit/s, 0.5 ms RTT)\n\n" + projectionMarkdown(judgeAll(rs))
	if err := os.WriteFile(filepath.Join(*out, *tag+".md"), []byte(md), 0o644); err != nil {
		return err
	}
	if err := cdfChart("Completion time CDF, "+*label, rs, filepath.Join(*out, *tag+"-cdf.svg")); err != nil {
		return err
	}
	return ratioChart("p50 and max ÷ T* against N", series, filepath.Join(*out, "scale-ratio.svg"))
}

func judgeAll(rs []Result) []projection {
	var ps []projection
	for _, r := range rs {
		ps = append(ps, judge(r))
	}
	return ps
}

func readJSON(path string, v any) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	return json.Unmarshal(b, v)
}

// cmdCharts draws the projections in a results directory together: every
// p*.json run's completion CDF in one chart, and p50 and max ÷ T* against
// N per rollout (name), with scale.json's smaller N beside them.
func cmdCharts(args []string) error {
	fs := flag.NewFlagSet("charts", flag.ExitOnError)
	out := fs.String("out", "results", "directory")
	fs.Parse(args)
	files, err := filepath.Glob(filepath.Join(*out, "p*.json"))
	if err != nil {
		return err
	}
	slices.Sort(files)
	var rs []Result
	series := map[string][]Result{}
	for _, f := range append(files, filepath.Join(*out, "scale.json")) {
		var ps []projection
		if err := readJSON(f, &ps); err != nil {
			if filepath.Base(f) == "scale.json" {
				continue
			}
			return err
		}
		for _, p := range ps {
			if filepath.Base(f) != "scale.json" {
				rs = append(rs, p.Result)
			}
			// scale.json repeats the projections of its image.
			if !slices.ContainsFunc(series[p.Name], func(r Result) bool { return r.N == p.N }) {
				series[p.Name] = append(series[p.Name], p.Result)
			}
		}
	}
	if len(rs) == 0 {
		return fmt.Errorf("no p*.json projections in %s", *out)
	}
	if err := cdfChart("Completion time CDF (projections)", rs, filepath.Join(*out, "projections-cdf.svg")); err != nil {
		return err
	}
	return ratioChart("p50 and max ÷ T* against N", series, filepath.Join(*out, "projections-ratio.svg"))
}
