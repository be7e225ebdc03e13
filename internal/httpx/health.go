package httpx

import (
	"context"
	"log"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/sirupsen/logrus"
)

// Check probes one dependency; nil means healthy. It must honour ctx.
type Check func(ctx context.Context) error

// CheckResult is one dependency's entry in a HealthReport.
type CheckResult struct {
	Status string `json:"status"` // "ok" or "fail"
	Error  string `json:"error,omitempty"`
	// Ms is how long the probe took, in milliseconds.
	Ms int64 `json:"ms"`
}

// HealthReport is the one /healthz body:
//
//	{"status":"ok","component":"tracker","checks":{"store":{"status":"ok","ms":0}}}
//
// Status is "ok" (HTTP 200) when every check passed, else "fail" (503).
type HealthReport struct {
	Status    string                 `json:"status"`
	Component string                 `json:"component"`
	Checks    map[string]CheckResult `json:"checks"`
}

// Health serves /healthz for a component: its checks run concurrently, each
// bounded by Timeout, on every request, unless Share set a window in which
// requests share one report.
type Health struct {
	component string
	timeout   time.Duration
	names     []string
	checks    map[string]Check

	// share is how long one report answers every request; 0 runs the
	// checks per request. mu serialises runs so concurrent callers wait for
	// one probe instead of starting their own.
	share time.Duration
	mu    sync.Mutex
	last  HealthReport
	at    time.Time
}

// Share makes requests within d of a report get that report instead of new
// probes. For a check that costs the dependency real work (a storage listing
// on an object store), /healthz must not let an unauthenticated caller
// multiply it: with Share, N requests cost one probe per window however
// fast they come. Call it before serving.
func (h *Health) Share(d time.Duration) *Health {
	h.share = d
	return h
}

// HealthTimeout bounds one probe.
const HealthTimeout = 2 * time.Second

// NewHealth returns a /healthz handler for component with no checks yet.
func NewHealth(component string) *Health {
	return &Health{component: component, timeout: HealthTimeout, checks: map[string]Check{}}
}

// Add registers a dependency check under name ("store", "redis", "cache").
// Call it before serving.
func (h *Health) Add(name string, c Check) *Health {
	if _, dup := h.checks[name]; !dup {
		h.names = append(h.names, name)
		sort.Strings(h.names)
	}
	h.checks[name] = c
	return h
}

// Report runs every check.
func (h *Health) Report(ctx context.Context) HealthReport {
	rep := HealthReport{Status: "ok", Component: h.component, Checks: make(map[string]CheckResult, len(h.names))}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, name := range h.names {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, h.timeout)
			defer cancel()
			start := time.Now()
			err := h.checks[name](cctx)
			res := CheckResult{Status: "ok", Ms: time.Since(start).Milliseconds()}
			if err != nil {
				res.Status, res.Error = "fail", err.Error()
			}
			mu.Lock()
			rep.Checks[name] = res
			if err != nil {
				rep.Status = "fail"
			}
			mu.Unlock()
		})
	}
	wg.Wait()
	return rep
}

// shared is Report, reused within the Share window.
func (h *Health) shared(ctx context.Context) HealthReport {
	if h.share <= 0 {
		return h.Report(ctx)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.at.IsZero() && time.Since(h.at) < h.share {
		return h.last
	}
	// Not the caller's context: a caller that hangs up must not leave a
	// cancelled probe as the answer for everyone else.
	h.last, h.at = h.Report(context.WithoutCancel(ctx)), time.Now()
	return h.last
}

// ServeHTTP answers the report: 200 when healthy, 503 otherwise.
func (h *Health) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rep := h.shared(r.Context())
	status := http.StatusOK
	if rep.Status != "ok" {
		status = http.StatusServiceUnavailable
	}
	w.Header().Set("Cache-Control", "no-store")
	WriteJSON(w, status, rep)
}

// newStdLogger adapts a logrus entry for http.Server.ErrorLog. Handshake
// failures of strangers are expected on members-only listeners, so they go
// to debug, not to the operator's console.
func newStdLogger(e *logrus.Entry) *log.Logger {
	return log.New(e.WriterLevel(logrus.DebugLevel), "", 0)
}
