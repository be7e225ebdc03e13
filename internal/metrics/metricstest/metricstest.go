// Package metricstest checks a component's registry against the metrics
// convention (package metrics) and its table in docs/metrics.md.
package metricstest

import (
	"os"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil/promlint"
)

// Documented lints every metric family g gathers (promlint: units, _total on
// counters, help text), checks it is named shoal_<component>_..., and that
// docs/metrics.md lists it in its table with its labels. Metrics that only
// appear once observed must be observed before calling it.
func Documented(t testing.TB, component string, g prometheus.Gatherer) {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("gather: %v", err)
	}
	if len(mfs) == 0 {
		t.Fatal("no metrics gathered")
	}
	problems, err := promlint.NewWithMetricFamilies(mfs).Lint()
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("metric %s: %s", p.Metric, p.Text)
	}
	docs := readDocs(t)
	prefix := "shoal_" + component + "_"
	for _, mf := range mfs {
		name := mf.GetName()
		if !strings.HasPrefix(name, prefix) {
			t.Errorf("metric %s: not named %s<thing>_<unit>", name, prefix)
		}
		row, ok := docs[name]
		if !ok {
			t.Errorf("metric %s is not in docs/metrics.md's table", name)
			continue
		}
		labels := map[string]bool{}
		for _, m := range mf.GetMetric() {
			for _, lp := range m.GetLabel() {
				labels[lp.GetName()] = true
			}
		}
		for l := range labels {
			if !strings.Contains(row, "`"+l+"`") {
				t.Errorf("metric %s: label %s is not in its docs/metrics.md row", name, l)
			}
		}
	}
}

var rowName = regexp.MustCompile("^\\|\\s*`(shoal_[a-z0-9_]+)`\\s*\\|")

// readDocs returns docs/metrics.md's table rows by metric name.
func readDocs(t testing.TB) map[string]string {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	root := filepath.Join(filepath.Dir(file), "..", "..", "..")
	b, err := os.ReadFile(filepath.Join(root, "docs", "metrics.md"))
	if err != nil {
		t.Fatalf("metrics table: %v", err)
	}
	rows := map[string]string{}
	for _, line := range strings.Split(string(b), "\n") {
		if m := rowName.FindStringSubmatch(line); m != nil {
			rows[m[1]] = line
		}
	}
	return rows
}
