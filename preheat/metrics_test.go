package preheat

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/metrics"
)

// /metrics serves the process's collectors next to the replica's own when
// the process hands them over, and never registers Go collectors itself
// (two replicas in one process would otherwise repeat them).
func TestMetricsProcessCollectors(t *testing.T) {
	for _, tc := range []struct {
		name   string
		deps   Deps
		wantGo bool
	}{
		{"alone", Deps{}, false},
		{"with the process's", Deps{ProcessMetrics: metrics.NewProcessRegistry()}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(testConfig("http://127.0.0.1:5000"), tc.deps)
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			rec := httptest.NewRecorder()
			s.handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
			body := rec.Body.String()
			if rec.Code != http.StatusOK || !strings.Contains(body, "shoal_preheat_jobs{") {
				t.Fatalf("%d %s", rec.Code, body)
			}
			if got := strings.Contains(body, "go_goroutines"); got != tc.wantGo {
				t.Fatalf("go_goroutines served: %v, want %v", got, tc.wantGo)
			}
		})
	}
}
