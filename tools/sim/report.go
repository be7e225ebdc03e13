package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
)

// validation is one cell simulated over several seeds.
type validation struct {
	cell
	Seeds      int            `json:"seeds"`
	SimP50     float64        `json:"simP50"` // mean over seeds
	SimMax     float64        `json:"simMax"`
	SimMaxLo   float64        `json:"simMaxMin"`
	SimMaxHi   float64        `json:"simMaxMax"`
	SimEgress  float64        `json:"simEgress"`
	Unfinished int            `json:"simUnfinished"`
	TStar      float64        `json:"tStar"`
	DP50       float64        `json:"deltaP50"` // (sim-measured)/measured
	DMax       float64        `json:"deltaMax"`
	Fallbacks  map[string]int `json:"simFallbacks,omitempty"`
	Busy       float64        `json:"simBusyAnswersPerNode"`
}

func validate(cells []cell, seeds int, tune func(*Params), progress func(string)) []validation {
	var out []validation
	for _, c := range cells {
		v := validation{cell: c, Seeds: seeds, SimMaxLo: math.Inf(1), SimMaxHi: math.Inf(-1), Fallbacks: map[string]int{}}
		for s := 1; s <= seeds; s++ {
			p := c.params(uint64(s))
			if tune != nil {
				tune(&p)
			}
			r := newWorld(p).run()
			v.TStar = r.TStar
			v.SimP50 += r.P50 / float64(seeds)
			m := r.Max
			if r.Unfinished > 0 {
				m = math.Inf(1)
			}
			v.SimMax += m / float64(seeds)
			v.SimMaxLo, v.SimMaxHi = math.Min(v.SimMaxLo, m), math.Max(v.SimMaxHi, m)
			v.SimEgress += r.Egress / float64(seeds)
			v.Unfinished += r.Unfinished
			v.Busy += float64(r.Refused) / float64(c.N) / float64(seeds)
			for k, n := range r.Fallbacks {
				v.Fallbacks[k] += n
			}
			if progress != nil {
				progress(fmt.Sprintf("%s seed %d: p50 %.2f max %.2f egress %.2f (%.1fs)", p.Name, s, r.P50, r.Max, r.Egress, r.WallSeconds))
			}
		}
		v.DP50 = (v.SimP50 - c.P50) / c.P50
		v.DMax = (v.SimMax - c.Max) / c.Max
		out = append(out, v)
	}
	return out
}

func pct(x float64) string {
	if math.IsNaN(x) || math.IsInf(x, 0) {
		return "–"
	}
	return fmt.Sprintf("%+.0f %%", 100*x)
}

func secs(x float64) string {
	switch {
	case math.IsNaN(x):
		return "–"
	case math.IsInf(x, 1):
		return "∞"
	}
	return fmt.Sprintf("%.2f", x)
}

func validationMarkdown(vs []validation) string {
	var b strings.Builder
	b.WriteString("| source | N | image | link | T* s | measured p50 | sim p50 | Δp50 | measured max | sim max (seed range) | Δmax | measured egress | sim egress | within ±15 % | CPU-bound |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, v := range vs {
		ok := "–"
		if !math.IsNaN(v.DMax) && !math.IsInf(v.DMax, 0) {
			in := math.Abs(v.DMax) <= 0.15 && (math.IsNaN(v.DP50) || math.Abs(v.DP50) <= 0.15)
			ok = map[bool]string{true: "yes", false: "**no**"}[in]
		}
		eg := "–"
		if !math.IsNaN(v.Egress) {
			eg = fmt.Sprintf("%.2f×", v.Egress)
		}
		cpu := ""
		if v.CPUBound {
			cpu = "yes"
		}
		fmt.Fprintf(&b, "| %s | %d | %d MiB | %g Mbit/s | %.2f | %s | %s | %s | %s | %s (%s–%s) | %s | %s | %.2f× | %s | %s |\n",
			v.Source, v.N, v.MiB, v.Mbit, v.TStar, secs(v.P50), secs(v.SimP50), pct(v.DP50), secs(v.cell.Max), secs(v.SimMax),
			secs(v.SimMaxLo), secs(v.SimMaxHi), pct(v.DMax), eg, v.SimEgress, ok, cpu)
	}
	return b.String()
}

// writeJSON writes v with NaN and ±Inf (not measured, never finished)
// as null, which encoding/json refuses to write.
func writeJSON(path string, v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		var generic any
		raw, err2 := json.Marshal(sanitize(reflect.ValueOf(v)))
		if err2 != nil {
			return err
		}
		if err := json.Unmarshal(raw, &generic); err != nil {
			return err
		}
		b = raw
	}
	var out bytes.Buffer
	if err := json.Indent(&out, b, "", "  "); err != nil {
		return err
	}
	out.WriteByte('\n')
	return os.WriteFile(path, out.Bytes(), 0o644)
}

// sanitize turns v into maps, slices and plain values, with non-finite
// floats as nil; struct fields keep their JSON names.
func sanitize(v reflect.Value) any {
	switch v.Kind() {
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return nil
		}
		return sanitize(v.Elem())
	case reflect.Float32, reflect.Float64:
		f := v.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return nil
		}
		return f
	case reflect.Slice, reflect.Array:
		out := make([]any, v.Len())
		for i := range out {
			out[i] = sanitize(v.Index(i))
		}
		return out
	case reflect.Map:
		out := map[string]any{}
		for _, k := range v.MapKeys() {
			out[fmt.Sprint(k.Interface())] = sanitize(v.MapIndex(k))
		}
		return out
	case reflect.Struct:
		out := map[string]any{}
		t := v.Type()
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			if !f.IsExported() && !f.Anonymous {
				continue
			}
			name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
			if name == "-" {
				continue
			}
			if f.Anonymous && name == "" {
				if m, ok := sanitize(v.Field(i)).(map[string]any); ok {
					for k, x := range m {
						out[k] = x
					}
				}
				continue
			}
			if name == "" {
				name = f.Name
			}
			out[name] = sanitize(v.Field(i))
		}
		return out
	}
	return v.Interface()
}

// projection is one large rollout against the goals.
type projection struct {
	Result
	Goals goals `json:"goals"`
}

type goals struct {
	P50, P99, P999, Egress float64
	Met                    bool `json:"met"`
}

func judge(r Result) projection {
	g := goals{P50: r.P50 / r.TStar, P99: r.P99 / r.TStar, P999: r.P999 / r.TStar, Egress: r.Egress}
	g.Met = r.Unfinished == 0 && g.P50 <= 1.05 && g.P99 <= 1.3 && g.P999 <= 1.5 && g.Egress <= 1.1
	return projection{Result: r, Goals: g}
}

func projectionMarkdown(ps []projection) string {
	var b strings.Builder
	b.WriteString("| rollout | N | image | T* s | p50 s (÷T*) | p99 s (÷T*) | p99.9 s (÷T*) | max s | registry egress | unfinished | busy answers / node | fallbacks | goals met | sim wall s |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, p := range ps {
		fb := []string{}
		for k, n := range p.Fallbacks {
			fb = append(fb, fmt.Sprintf("%s=%d", k, n))
		}
		slices.Sort(fb)
		met := map[bool]string{true: "yes", false: "**no**"}[p.Goals.Met]
		fmt.Fprintf(&b, "| %s | %d | %s | %.2f | %.2f (%.2f) | %.2f (%.2f) | %.2f (%.2f) | %.2f | %.2f× | %d | %.0f | %s | %s | %.0f |\n",
			p.Name, p.N, size(p.ImageBytes), p.TStar, p.P50, p.Goals.P50, p.P99, p.Goals.P99, p.P999, p.Goals.P999, p.Max,
			p.Egress, p.Unfinished, float64(p.Refused)/float64(p.N), strings.Join(fb, " "), met, p.WallSeconds)
	}
	b.WriteString("\nGoals: p50 ≤ 1.05× T*, p99 ≤ 1.3× T*, p99.9 ≤ 1.5× T*, registry egress ≤ 1.1× the image.\n")
	return b.String()
}

func size(n int64) string {
	if n >= 1<<30 && n%(1<<30) == 0 {
		return fmt.Sprintf("%d GiB", n>>30)
	}
	if n >= 1e9 {
		return fmt.Sprintf("%.1f GB", float64(n)/1e9)
	}
	return fmt.Sprintf("%d MiB", n>>20)
}

func mkdir(dir string) error { return os.MkdirAll(filepath.Clean(dir), 0o755) }
