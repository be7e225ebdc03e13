package origin

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// The idle clock is the upstream's: a body that stops delivering is cut,
// a reader that takes its time between reads of a body already delivered
// is not.
func TestIdleRead(t *testing.T) {
	const idle = 50 * time.Millisecond
	hang := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/hang" {
			w.Write([]byte(strings.Repeat("x", 1<<20)))
			return
		}
		w.Write([]byte("x"))
		w.(http.Flusher).Flush()
		<-hang
	}))
	defer srv.Close()
	defer close(hang) // before Close, which waits for the handler
	c := &http.Client{Transport: idleReadTransport{rt: http.DefaultTransport, idle: idle}}

	resp, err := c.Get(srv.URL + "/slow-reader")
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	got := 0
	for reads := 0; ; reads++ {
		n, err := resp.Body.Read(buf)
		got += n
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("a reader pausing between reads was cut after %d bytes: %v", got, err)
		}
		if reads < 3 {
			time.Sleep(3 * idle) // the reader's own pace, busy with what it got
		}
	}
	resp.Body.Close()
	if got != 1<<20 {
		t.Fatalf("read %d bytes, want %d", got, 1<<20)
	}

	resp, err = c.Get(srv.URL + "/hang")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	done := make(chan error, 1)
	go func() {
		_, err := io.ReadAll(resp.Body)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("a hanging body ended without an error")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a hanging body was never cut")
	}
}
