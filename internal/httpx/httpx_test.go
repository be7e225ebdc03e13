package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

func TestWriteError(t *testing.T) {
	for _, tc := range []struct {
		status     int
		code, want string
	}{
		{400, "", CodeInvalid},
		{401, "", CodeUnauthorized},
		{404, "", CodeNotFound},
		{503, "", CodeUnavailable},
		{500, "", CodeInternal},
		{403, "REGISTRY_NOT_CONFIGURED", "REGISTRY_NOT_CONFIGURED"},
	} {
		rec := httptest.NewRecorder()
		WriteError(rec, tc.status, tc.code, "why")
		var body ErrorBody
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatal(err)
		}
		if rec.Code != tc.status || body.Code != tc.want || body.Error != "why" || rec.Header().Get("Content-Type") != "application/json" {
			t.Errorf("%d %q: got %d %+v", tc.status, tc.code, rec.Code, body)
		}
	}
}

func TestHealth(t *testing.T) {
	h := NewHealth("tracker")
	h.timeout = 50 * time.Millisecond
	h.Add("store", func(context.Context) error { return nil })
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	var rep HealthReport
	_ = json.Unmarshal(rec.Body.Bytes(), &rep)
	if rec.Code != 200 || rep.Status != "ok" || rep.Component != "tracker" || rep.Checks["store"].Status != "ok" {
		t.Fatalf("healthy: %d %s", rec.Code, rec.Body)
	}
	h.Add("redis", func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
	h.Add("disk", func(context.Context) error { return errors.New("read-only") })
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	rep = HealthReport{}
	_ = json.Unmarshal(rec.Body.Bytes(), &rep)
	if rec.Code != 503 || rep.Status != "fail" || rep.Checks["disk"].Error != "read-only" ||
		rep.Checks["redis"].Status != "fail" || rep.Checks["store"].Status != "ok" {
		t.Fatalf("unhealthy: %d %s", rec.Code, rec.Body)
	}
}

func TestServeShutsDown(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("x")) }), nil)
	if srv.ReadHeaderTimeout == 0 || srv.IdleTimeout == 0 {
		t.Fatal("server without timeouts")
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Serve(ctx, srv, l) }()
	resp, err := http.Get("http://" + l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return after cancel")
	}
}

// TestHealthShare: within the window every request gets the one report, so
// a burst costs one probe; after it, a new probe runs.
func TestHealthShare(t *testing.T) {
	var probes atomic.Int64
	h := NewHealth("x").Share(time.Hour)
	h.Add("dep", func(context.Context) error { probes.Add(1); return nil })
	srv := httptest.NewServer(h)
	defer srv.Close()
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			resp, err := http.Get(srv.URL)
			if err != nil {
				t.Error(err)
				return
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("status %d", resp.StatusCode)
			}
		})
	}
	wg.Wait()
	if n := probes.Load(); n != 1 {
		t.Fatalf("50 requests ran %d probes, want 1", n)
	}
	h.at = h.at.Add(-2 * time.Hour) // the window has passed
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if n := probes.Load(); n != 2 {
		t.Fatalf("after the window: %d probes, want 2", n)
	}
}
