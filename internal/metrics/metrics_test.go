package metrics

import (
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestHandlerServesComponentAndProcessOnce(t *testing.T) {
	proc := NewProcessRegistry()
	var bodies []string
	for _, name := range []string{"a", "b"} {
		reg := prometheus.NewRegistry()
		c := prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_" + name + "_things_total", Help: "Things."})
		reg.MustRegister(c)
		c.Inc()
		rec := httptest.NewRecorder()
		Handler(reg, proc).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		b, _ := io.ReadAll(rec.Body)
		bodies = append(bodies, string(b))
	}
	for i, name := range []string{"a", "b"} {
		b := bodies[i]
		if !strings.Contains(b, "shoal_"+name+"_things_total 1") {
			t.Errorf("%s: own metric missing", name)
		}
		if strings.Count(b, "# TYPE go_goroutines ") != 1 || !strings.Contains(b, "process_") {
			t.Errorf("%s: Go/process collectors not served exactly once", name)
		}
	}
	rec := httptest.NewRecorder()
	Handler(prometheus.NewRegistry(), nil).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	if strings.Contains(rec.Body.String(), "go_goroutines") {
		t.Error("no process registry given, yet Go metrics served")
	}
}
