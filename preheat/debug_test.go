package preheat

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

func TestDebugConfig(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:5000")
	cfg.Debug.Addr = "10.0.0.1:6060"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "debug.addr") || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("debug.addr 10.0.0.1:6060: %v", err)
	}
	cfg.Debug.Addr = "[::1]:6060"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if DefaultConfig().Debug.Addr != "" {
		t.Fatal("debug listener on by default")
	}
}

// Serve runs the pprof listener for as long as the API when configured.
func TestDebugServe(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:5000")
	cfg.Debug.Addr = testenv.FreeAddr(t)
	r := startReplica(t, cfg, NewMemoryStore())
	url := "http://" + cfg.Debug.Addr + "/debug/pprof/"
	testenv.WaitHTTPOK(t, url, 5*time.Second)
	r.stop()
	noKeepAlive := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		resp, err := noKeepAlive.Get(url)
		if err != nil {
			break
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("debug listener still up after Serve returned")
		}
	}
}
