package agent

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

func getJSON(t *testing.T, req *http.Request, v any) int {
	t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(b, v); err != nil {
		t.Fatalf("%s %s: not JSON (%v): %q", req.Method, req.URL, err, b)
	}
	return resp.StatusCode
}

func get(t *testing.T, url string) *http.Request {
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// /healthz probes the cache directory and the BitTorrent client; a cache
// that cannot take a download turns it to 503 naming the check.
func TestHealthzChecks(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	ag := startAgent(t, cfg)
	var rep httpx.HealthReport
	if st := getJSON(t, get(t, "http://"+ag.mirror+"/healthz"), &rep); st != http.StatusOK || rep.Status != "ok" || rep.Component != "agent" {
		t.Fatalf("healthz %d %+v", st, rep)
	}
	for _, c := range []string{"cache", "p2p"} {
		if rep.Checks[c].Status != "ok" {
			t.Errorf("check %s: %+v", c, rep.Checks[c])
		}
	}
	if err := os.RemoveAll(filepath.Join(cfg.Cache.Dir, "partial")); err != nil {
		t.Fatal(err)
	}
	rep = httpx.HealthReport{}
	if st := getJSON(t, get(t, "http://"+ag.mirror+"/healthz"), &rep); st != http.StatusServiceUnavailable || rep.Checks["cache"].Status != "fail" || rep.Checks["p2p"].Status != "ok" {
		t.Fatalf("healthz with no partial dir: %d %+v", st, rep)
	}
	ag.p2p.Torrents().Close() // the client alone: the listeners stay
	rep = httpx.HealthReport{}
	if getJSON(t, get(t, "http://"+ag.mirror+"/healthz"), &rep); rep.Checks["p2p"].Status != "fail" {
		t.Fatalf("healthz with the client closed: %+v", rep)
	}
}

func TestHeartbeatHealth(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	window := heartbeatWindow(10 * time.Second) // 35 s
	for _, tc := range []struct {
		name   string
		since  time.Time
		lastOK time.Time
		now    time.Time
		ok     bool
	}{
		{"not started", time.Time{}, time.Time{}, t0, false},
		{"young loop, nothing yet", t0, time.Time{}, t0.Add(time.Second), true},
		{"never accepted", t0, time.Time{}, t0.Add(time.Minute), false},
		{"recent success", t0, t0.Add(50 * time.Second), t0.Add(time.Minute), true},
		{"success too old", t0, t0.Add(time.Second), t0.Add(time.Minute), false},
	} {
		s := heartbeatState{since: tc.since, lastOK: tc.lastOK, lastErr: errors.New("connection refused")}
		if err := s.health(tc.now, window); (err == nil) != tc.ok {
			t.Errorf("%s: err = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// The metrics listener: open on loopback without a token; with one, every
// route wants it as a bearer token, and refusals are the house error shape.
func TestMetricsListener(t *testing.T) {
	token := secret.Generate()
	for _, tc := range []struct {
		name, token, auth string
		want              int
	}{
		{"loopback, no token", "", "", http.StatusOK},
		{"token missing", token, "", http.StatusUnauthorized},
		{"token wrong", token, "Bearer " + secret.Generate(), http.StatusUnauthorized},
		{"token as basic", token, "Basic " + token, http.StatusUnauthorized},
		{"token right", token, "bearer " + token, http.StatusOK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := testConfig(t, "127.0.0.1:1")
			cfg.P2P.Enabled = false
			cfg.Control.Addr = ""
			cfg.Metrics.Addr, cfg.Metrics.Token = testenv.FreeAddr(t), config.NewSecret(tc.token)
			startAgent(t, cfg)
			for _, path := range []string{"/metrics", "/healthz"} {
				req := get(t, "http://"+cfg.Metrics.Addr+path)
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != tc.want {
					t.Fatalf("%s: %d %q", path, resp.StatusCode, b)
				}
				if tc.want == http.StatusUnauthorized {
					var eb httpx.ErrorBody
					if json.Unmarshal(b, &eb) != nil || eb.Code != httpx.CodeUnauthorized || strings.Contains(string(b), token) {
						t.Fatalf("%s: body %q", path, b)
					}
				}
				if path == "/metrics" && tc.want == http.StatusOK && !strings.Contains(string(b), "shoal_agent_cache_used_bytes") {
					t.Fatalf("/metrics without the agent's metrics: %q", b)
				}
			}
			var eb httpx.ErrorBody
			req := get(t, "http://"+cfg.Metrics.Addr+"/nope")
			req.Header.Set("Authorization", "Bearer "+tc.token)
			if st := getJSON(t, req, &eb); st != http.StatusNotFound || eb.Code != httpx.CodeNotFound {
				t.Fatalf("miss: %d %+v", st, eb)
			}
		})
	}
}

// Router misses outside /v2/ answer the house shape; under /v2/ the OCI one.
func TestMirrorErrorShapes(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.P2P.Enabled = false
	ag := startAgent(t, cfg)
	var eb httpx.ErrorBody
	if st := getJSON(t, get(t, "http://"+ag.mirror+"/nope"), &eb); st != http.StatusNotFound || eb.Code != httpx.CodeNotFound {
		t.Fatalf("miss: %d %+v", st, eb)
	}
	var oci struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	if st := getJSON(t, get(t, "http://"+ag.mirror+"/v2/UPPER/blobs/sha256:00"), &oci); st != http.StatusBadRequest || len(oci.Errors) != 1 || oci.Errors[0].Code != "NAME_INVALID" {
		t.Fatalf("OCI error: %d %+v", st, oci)
	}
}

// Two agents from one config in one process: nothing global is shared, so
// both serve, and stopping one leaves the other serving. Close after
// Serve's own is a no-op.
func TestTwoAgentsOneConfig(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Control.Addr = ""
	var addrs [2]string
	var stops [2]context.CancelFunc
	var agents [2]*Agent
	var done [2]chan error
	for i := range agents {
		a, err := New(cfg, Deps{})
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		agents[i], addrs[i], stops[i], done[i] = a, l.Addr().String(), cancel, make(chan error, 1)
		go func() { done[i] <- a.Serve(ctx, l) }()
	}
	for _, addr := range addrs {
		testenv.WaitHTTPOK(t, "http://"+addr+"/healthz", 10*time.Second)
	}
	for i := range agents {
		stops[i]()
		select {
		case err := <-done[i]:
			if err != nil {
				t.Errorf("agent %d Serve: %v", i, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("agent %d Serve did not return", i)
		}
		if err := agents[i].Close(); err != nil {
			t.Fatalf("Close after Serve: %v", err)
		}
		if i == 0 {
			testenv.WaitHTTPOK(t, "http://"+addrs[1]+"/healthz", 5*time.Second)
		}
	}
}

// Finding 9 of issue 22: the mirror served /metrics to anyone whatever
// address it listened on. Now a client beyond loopback needs metrics.token
// (and gets nothing without one configured); loopback clients (containerd's
// node, a node exporter) still read it.
func TestMirrorMetricsLoopbackOrToken(t *testing.T) {
	ok := http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) })
	token := secret.Generate()
	for _, tc := range []struct {
		name, token, remote, auth string
		want                      int
	}{
		{"loopback, no token configured", "", "127.0.0.1:5000", "", 200},
		{"loopback v6", "", "[::1]:5000", "", 200},
		{"remote, no token configured", "", "192.0.2.7:5000", "", 403},
		{"remote, bearer but none configured", "", "192.0.2.7:5000", "Bearer " + token, 403},
		{"remote without the token", token, "192.0.2.7:5000", "", 401},
		{"remote with a wrong token", token, "192.0.2.7:5000", "Bearer " + secret.Generate(), 401},
		{"remote with the token", token, "192.0.2.7:5000", "Bearer " + token, 200},
		{"loopback, token configured", token, "127.0.0.1:5000", "", 200},
	} {
		req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
		req.RemoteAddr = tc.remote
		if tc.auth != "" {
			req.Header.Set("Authorization", tc.auth)
		}
		rec := httptest.NewRecorder()
		loopbackOr(tc.token, ok).ServeHTTP(rec, req)
		if rec.Code != tc.want {
			t.Errorf("%s: %d, want %d", tc.name, rec.Code, tc.want)
		}
	}
}
