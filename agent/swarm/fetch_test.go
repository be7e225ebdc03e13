package swarm

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
)

// TestBusyAnswersKeepTheConnection: a node's "no upload slot free" answer
// is the common case at scale; each one must not cost the next request a
// new connection (a mutual-TLS handshake on the data path).
func TestBusyAnswersKeepTheConnection(t *testing.T) {
	var calls atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) <= 5 {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, `{"errors":[{"code":"UNAVAILABLE","message":"no upload slot free; ask another node"}]}`)
			return
		}
		w.Header().Set("Content-Range", "bytes 0-3/8")
		w.WriteHeader(http.StatusPartialContent)
		io.WriteString(w, "abcd")
	}))
	var conns atomic.Int64
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	get := func() (io.ReadCloser, error) {
		req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
		req.Header.Set("Range", "bytes=0-3")
		resp, err := srv.Client().Do(req)
		if err != nil {
			return nil, err
		}
		return RangeBody(resp, 0, 4, 8)
	}
	for i := 0; i < 5; i++ {
		_, err := get()
		var se *StatusError
		if !errors.As(err, &se) || se.Status != http.StatusServiceUnavailable {
			t.Fatalf("answer %d: %v, want a 503 StatusError", i, err)
		}
	}
	body, err := get()
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(body)
	body.Close()
	if string(b) != "abcd" {
		t.Fatalf("body %q", b)
	}
	if n := conns.Load(); n != 1 {
		t.Fatalf("six requests, five of them answered busy, used %d connections; want 1", n)
	}
}
