package preheat

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

func TestDebugConfig(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:5000")
	cfg.Debug.Addr = "10.0.0.1:6060"
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "debug.addr") || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("debug.addr 10.0.0.1:6060: %v", err)
	}
	cfg.Debug.Addr = "[::1]:6060"
	if err := cfg.validate(); err != nil {
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
	s, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	url := "http://" + cfg.Debug.Addr + "/debug/pprof/"
	testenv.WaitHTTPOK(t, url, 5*time.Second)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
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
