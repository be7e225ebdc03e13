package tracker

import (
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

func TestDebugConfig(t *testing.T) {
	cfg := testConfig()
	cfg.Debug.Addr = "0.0.0.0:6060"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "debug.addr") || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("debug.addr 0.0.0.0:6060: %v", err)
	}
	cfg.Debug.Addr = "127.0.0.1:6060"
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	f := t.TempDir() + "/t.yml"
	if err := os.WriteFile(f, []byte("secrets: ["+testSecret+"]\nallowUnsigned: true\ndebug: {addr: \"localhost:6060\"}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if cfg, err := LoadConfig(f); err != nil || cfg.Debug.Addr != "localhost:6060" {
		t.Fatalf("debug block: %+v %v", cfg.Debug, err)
	}
	if DefaultConfig().Debug.Addr != "" {
		t.Fatal("debug listener on by default")
	}
}

// Serve runs the pprof listener for as long as the tracker when configured.
func TestDebugServe(t *testing.T) {
	cfg := testConfig()
	cfg.Debug.Addr = testenv.FreeAddr(t)
	s, err := New(cfg, Deps{Store: NewMemoryStore(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stop := serveInBackground(t, s, l)
	url := "http://" + cfg.Debug.Addr + "/debug/pprof/"
	testenv.WaitHTTPOK(t, url, 5*time.Second)
	// The tracker's own listener has no debug pages.
	if resp, err := http.Get("http://" + l.Addr().String() + "/debug/pprof/"); err != nil || resp.StatusCode != http.StatusNotFound {
		t.Fatalf("tracker listener /debug/pprof/: %v %v", resp, err)
	}
	stop()
}
