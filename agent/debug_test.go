package agent

import (
	"net/http"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// The pprof listener runs with the agent when configured, on its own
// address: the mirror has no debug pages.
func TestDebugListener(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.P2P.Enabled = false
	cfg.Debug.Addr = testenv.FreeAddr(t)
	ag := startAgent(t, cfg)
	url := "http://" + cfg.Debug.Addr + "/debug/pprof/"
	testenv.WaitHTTPOK(t, url, 5*time.Second)
	if resp, err := http.Get("http://" + ag.mirror + "/debug/pprof/"); err != nil || resp.StatusCode == http.StatusOK {
		t.Fatalf("mirror /debug/pprof/: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	cfg.Debug.Addr = "0.0.0.0:6060"
	if _, err := New(cfg, Deps{}); err == nil {
		t.Fatal("a debug listener beyond loopback was accepted")
	}
}
