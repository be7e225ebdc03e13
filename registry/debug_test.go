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
	cfg, err := configuration.Parse(strings.NewReader(fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http:
  addr: %q
  secret: registry-secret
  debug:
    addr: %q
    prometheus: {enabled: true, path: /prom}
storage:
  inmemory: {}
`, addr, debug)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// http.debug.addr beyond loopback is refused before anything starts.
func TestDebugAddrMustBeLoopback(t *testing.T) {
	for _, addr := range []string{":5001", "0.0.0.0:5001", "[::]:5001", "192.0.2.1:5001"} {
		_, err := New(debugTestConfig(t, "127.0.0.1:0", addr), Deps{})
		if err == nil || !strings.Contains(err.Error(), "http.debug.addr") || !strings.Contains(err.Error(), addr) ||
			!strings.Contains(err.Error(), "loopback") {
			t.Errorf("http.debug.addr %q: err = %v, want a refusal naming the key, the address and loopback", addr, err)
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
	for _, path := range []string{"/debug/pprof/", "/debug/vars"} {
		if code, _ := get("http://" + addr + path); code != http.StatusNotFound {
			t.Errorf("registry %s: %d, want 404", path, code)
		}
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
