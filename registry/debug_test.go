package registry

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"

	"github.com/shoalproject/shoal/internal/testenv"
)

func debugTestConfig(t *testing.T, addr, debug string) *configuration.Configuration {
	t.Helper()
	return debugConfig(t, addr, debug, true)
}

// debugConfig is a registry config with http.debug.addr debug and
// http.debug.prometheus.enabled prom.
func debugConfig(t *testing.T, addr, debug string, prom bool) *configuration.Configuration {
	t.Helper()
	cfg, err := configuration.Parse(strings.NewReader(fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http:
  addr: %q
  secret: registry-secret
  debug:
    addr: %q
    prometheus: {enabled: %t, path: /prom}
storage:
  inmemory: {}
`, addr, debug, prom)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// http.debug.addr beyond loopback is refused before anything starts unless
// it is to serve Prometheus metrics alone.
func TestDebugAddrMustBeLoopback(t *testing.T) {
	for _, addr := range []string{":5001", "0.0.0.0:5001", "[::]:5001", "192.0.2.1:5001"} {
		_, err := New(debugConfig(t, "127.0.0.1:0", addr, false), Deps{})
		if err == nil || !strings.Contains(err.Error(), "http.debug.addr") || !strings.Contains(err.Error(), addr) ||
			!strings.Contains(err.Error(), "loopback") || !strings.Contains(err.Error(), "prometheus") {
			t.Errorf("http.debug.addr %q: err = %v, want a refusal naming the key, the address, loopback and the metrics-only way", addr, err)
		}
	}
}

// Which debug listener an address gets: loopback the full one, anything
// else metrics alone, and only with prometheus on.
func TestDebugMetricsOnly(t *testing.T) {
	for _, c := range []struct {
		addr        string
		prom        bool
		metricsOnly bool
		err         bool
	}{
		{"", false, false, false},
		{"127.0.0.1:5001", true, false, false},
		{"localhost:5001", false, false, false},
		{"[::1]:5001", true, false, false},
		{":8001", true, true, false}, // Harbor's metric.port
		{"0.0.0.0:9090", true, true, false},
		{"[::]:9090", true, true, false},
		{":8001", false, false, true},
		{"10.0.0.1:8001", false, false, true},
		{"10.0.0.1", true, false, true},
		{"10.0.0.1:", true, false, true},
	} {
		var d configuration.Debug
		d.Addr, d.Prometheus.Enabled = c.addr, c.prom
		got, err := debugMetricsOnly(d)
		if got != c.metricsOnly || (err != nil) != c.err {
			t.Errorf("debug addr %q prometheus %t: metrics only %t, err %v; want %t, error %t", c.addr, c.prom, got, err, c.metricsOnly, c.err)
		}
	}
}

// The debug listener serves pprof, expvar, distribution's health page and
// prometheus from an explicit mux: nothing else of http.DefaultServeMux,
// and none of it on the registry's own address.
func TestDebugServer(t *testing.T) {
	addr, debug := testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg := debugTestConfig(t, addr, debug)
	s, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := Listen(cfg)
	if err != nil {
		t.Fatal(err)
	}
	serveOn(t, s, l)

	client := &http.Client{Timeout: 20 * time.Second}
	get := func(url string) (int, string) {
		t.Helper()
		var resp *http.Response
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
			if resp, err = client.Get(url); err == nil || time.Now().After(deadline) {
				break
			}
		}
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		path, want string
	}{
		{"/debug/pprof/", "goroutine"},
		{"/debug/pprof/heap?debug=1", "heap profile"},
		{"/debug/pprof/cmdline", ""},
		{"/debug/vars", "memstats"},
		{"/debug/health", "{"},
		{"/prom", "go_goroutines"},
	} {
		if code, body := get("http://" + debug + c.path); code != http.StatusOK || !strings.Contains(body, c.want) {
			t.Errorf("debug %s: %d %.200q, want 200 with %q", c.path, code, body, c.want)
		}
	}
	if code, body := get("http://" + debug + "/debug/pprof/profile?seconds=1"); code != http.StatusOK || len(body) == 0 {
		t.Errorf("debug /debug/pprof/profile: %d, %d bytes", code, len(body))
	}
	// Registered on http.DefaultServeMux by linked packages, not served.
	for _, path := range []string{"/debug/requests", "/debug/events", "/debug/lockTimes", "/debug/perf"} {
		if code, _ := get("http://" + debug + path); code != http.StatusNotFound {
			t.Errorf("debug %s: %d, want 404", path, code)
		}
	}
	// The registry's own listener has no debug pages.
	if code, _ := get("http://" + addr + "/v2/"); code != http.StatusOK {
		t.Fatalf("registry /v2/: %d", code)
	}
	// distribution's per-route series count the request, by route name.
	if _, body := get("http://" + debug + "/prom"); !strings.Contains(body, `registry_http_requests_total{code="200",handler="base",method="get"} 1`) {
		t.Errorf("debug /prom lacks the /v2/ request by route: %.2000q", body)
	}
	for _, path := range []string{"/debug/pprof/", "/debug/vars"} {
		if code, _ := get("http://" + addr + path); code != http.StatusNotFound {
			t.Errorf("registry %s: %d, want 404", path, code)
		}
	}
}

// Two registries with prometheus on live in one process (shoal run next to
// a test's, or any test run twice with -count): distribution's per-app
// series are each registry's own, not the process-global registry's.
func TestDebugPrometheusTwice(t *testing.T) {
	for i := range 2 {
		s, err := New(debugTestConfig(t, "127.0.0.1:0", "127.0.0.1:0"), Deps{})
		if err != nil {
			t.Fatalf("registry %d: %v", i, err)
		}
		s.Close()
	}
}

// configs/registry.yml documents http.debug and leaves it off.
func TestShippedConfigDebugOff(t *testing.T) {
	cfg, err := LoadConfig("../configs/registry.yml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.HTTP.Debug.Addr != "" || cfg.HTTP.Debug.Prometheus.Enabled {
		t.Fatalf("http.debug: %+v", cfg.HTTP.Debug)
	}
}
