package debugserver

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sirupsen/logrus"
)

func TestValidateAddr(t *testing.T) {
	for _, tc := range []struct {
		addr    string
		wantErr string // "" = accepted
	}{
		{"", ""},
		{"127.0.0.1:6060", ""},
		{"127.0.0.1:0", ""},
		{"127.1.2.3:6060", ""},
		{"[::1]:6060", ""},
		{"localhost:6060", ""},
		{"0.0.0.0:6060", "every interface"},
		{"[::]:6060", "every interface"},
		{":6060", "empty host"},
		{"10.0.0.5:6060", "not a loopback IP"},
		{"[fe80::1%eth0]:6060", "not a loopback IP"},
		{"example.com:6060", "not a loopback IP"},
		{"localhost.example.com:6060", "not a loopback IP"},
		{"127.0.0.1", "want host:port"},
		{"127.0.0.1:", "port is missing"},
	} {
		err := ValidateAddr(tc.addr)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("ValidateAddr(%q) = %v, want nil", tc.addr, err)
		case tc.wantErr != "" && err == nil:
			t.Errorf("ValidateAddr(%q) = nil, want an error", tc.addr)
		case tc.wantErr != "":
			msg := err.Error()
			if !strings.Contains(msg, tc.wantErr) || !strings.Contains(msg, tc.addr) {
				t.Errorf("ValidateAddr(%q) = %q, want it to name the address and say %q", tc.addr, msg, tc.wantErr)
			}
			if strings.Contains(tc.wantErr, "interface") || strings.Contains(tc.wantErr, "loopback") {
				if !strings.Contains(msg, "memory") {
					t.Errorf("ValidateAddr(%q) = %q, want the reason (memory contents)", tc.addr, msg)
				}
			}
		}
	}
}

func TestServeRefusesNonLoopback(t *testing.T) {
	if _, err := Serve(context.Background(), "0.0.0.0:0", nil); err == nil {
		t.Fatal("Serve on 0.0.0.0 succeeded")
	}
	if _, err := Serve(context.Background(), "", nil); err == nil {
		t.Fatal("Serve with no address succeeded")
	}
}

func TestServe(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := Serve(ctx, "127.0.0.1:0", logrus.WithField("test", t.Name()))
	if err != nil {
		t.Fatal(err)
	}
	base := "http://" + addr.String()
	client := &http.Client{Timeout: 20 * time.Second}
	get := func(path string) (int, []byte) {
		t.Helper()
		resp, err := client.Get(base + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("GET %s: read: %v", path, err)
		}
		return resp.StatusCode, b
	}

	if code, body := get("/debug/pprof/"); code != http.StatusOK || !strings.Contains(string(body), "goroutine") {
		t.Fatalf("/debug/pprof/: %d %.200s", code, body)
	}
	if code, body := get("/debug/pprof/cmdline"); code != http.StatusOK || len(body) == 0 {
		t.Fatalf("/debug/pprof/cmdline: %d %q", code, body)
	}
	if code, body := get("/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(string(body), "goroutine profile") {
		t.Fatalf("/debug/pprof/goroutine: %d %.200s", code, body)
	}
	code, body := get("/debug/pprof/profile?seconds=1")
	if code != http.StatusOK || len(body) == 0 {
		t.Fatalf("/debug/pprof/profile: %d, %d bytes", code, len(body))
	}
	if body[0] != 0x1f || body[1] != 0x8b { // profiles are gzipped protobuf
		t.Fatalf("/debug/pprof/profile: not a gzipped profile: % x", body[:min(len(body), 8)])
	}
	// Only the debug handlers: nothing else of http.DefaultServeMux.
	if code, _ := get("/debug/vars"); code != http.StatusNotFound {
		t.Fatalf("/debug/vars: %d, want 404 (fresh mux)", code)
	}

	cancel()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(base + "/debug/pprof/")
		if err != nil {
			break // stopped
		}
		resp.Body.Close()
		if time.Now().After(deadline) {
			t.Fatal("debug server still answers after ctx was cancelled")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
