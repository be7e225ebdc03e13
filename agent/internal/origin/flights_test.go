package origin

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent/internal/partial"
)

func createIn(t *testing.T) func() (*partial.Blob, error) {
	return func() (*partial.Blob, error) {
		return partial.Create(t.Context(), filepath.Join(t.TempDir(), "blob"), "00")
	}
}

// One download per key however many join; each joiner's credentials are
// tried before a refusal fails it, and a failed flight is not joined.
func TestFlights(t *testing.T) {
	fs := NewFlights()
	key := Key{Base: "http://r", Hex: "00"}
	a, leaveA, started, err := fs.Join(key, Cred{Repo: "x", Auth: "A"}, -1, createIn(t))
	if err != nil || !started {
		t.Fatalf("first Join: started %v, %v", started, err)
	}
	b, leaveB, started, err := fs.Join(key, Cred{Repo: "x", Auth: "B"}, -1, createIn(t))
	if err != nil || started || b != a {
		t.Fatalf("second Join: started %v, same flight %v, %v", started, b == a, err)
	}
	if n := fs.Requesters(key); n != 2 {
		t.Fatalf("%d requesters, want 2", n)
	}
	if c := a.Credential(); c.Auth != "A" {
		t.Fatalf("credential %q, want the starter's", c.Auth)
	}
	if !a.SwitchCred(Cred{Repo: "x", Auth: "A"}, true) || a.Credential().Auth != "B" {
		t.Fatalf("refused A: want B's credentials, have %q", a.Credential().Auth)
	}
	leaveB() // B's credentials leave with B
	if a.SwitchCred(Cred{Repo: "x", Auth: "B"}, true) {
		t.Fatal("switched to a credential nobody attached holds")
	}
	if n := fs.Requesters(key); n != 0 {
		t.Fatalf("a flight refused for good is still joinable (%d requesters)", n)
	}
	c, leaveC, started, err := fs.Join(key, Cred{Repo: "x", Auth: "C"}, -1, createIn(t))
	if err != nil || !started || c == a {
		t.Fatalf("Join after the refusal: started %v, %v", started, err)
	}
	refused := errors.New("refused")
	a.End(refused)
	if err := a.Wait(context.Background()); !errors.Is(err, refused) {
		t.Fatalf("Wait = %v", err)
	}
	leaveA()
	c.End(nil)
	if err := c.Wait(context.Background()); err != nil {
		t.Fatalf("Wait = %v", err)
	}
	leaveC()
}

func TestAllowed(t *testing.T) {
	urls := []string{"https://Registry.Example:5000/", "http://127.0.0.1:5000"}
	for _, tc := range []struct {
		base string
		want int
	}{
		{"https://registry.example:5000", 0},
		{"HTTPS://REGISTRY.EXAMPLE:5000/", 0},
		{"http://127.0.0.1:5000", 1},
		{"http://127.0.0.1:5001", -1},
		{"https://user@registry.example:5000", -1},
		{"https://registry.example:5000?x=1", -1},
	} {
		i, err := Allowed(urls, tc.base)
		if i != tc.want || (err != nil) != (tc.want < 0) {
			t.Errorf("Allowed(%q) = %d, %v; want %d", tc.base, i, err, tc.want)
		}
	}
}

// Retire is called under the store's lock (Store.Commit) while another
// requester may hold the set's lock in Join, creating its partial blob in
// the store: Retire must not need the set's lock, or the two deadlock.
// A retired flight is not joined; the next Join starts afresh.
func TestRetireWhileJoinCreates(t *testing.T) {
	fs := NewFlights()
	key := Key{Base: "http://r", Hex: "00"}
	f, leave, _, err := fs.Join(key, Cred{}, -1, createIn(t))
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	var store sync.Mutex // the store's lock
	store.Lock()         // held by a commit...
	creating, joined := make(chan struct{}), make(chan struct{})
	go func() {
		// ...while another blob's first requester creates its partial
		// blob under the set's lock, waiting for the store's.
		_, leave2, _, err := fs.Join(Key{Base: "http://r", Hex: "11"}, Cred{}, -1, func() (*partial.Blob, error) {
			close(creating)
			store.Lock()
			defer store.Unlock()
			return createIn(t)()
		})
		if err == nil {
			leave2()
		}
		close(joined)
	}()
	<-creating
	retired := make(chan struct{})
	go func() { f.Retire(); close(retired) }() // the commit's published, under the store's lock
	select {
	case <-retired:
	case <-time.After(5 * time.Second):
		t.Fatal("Retire waits for the set's lock, which a Join holds while it waits for the store's: deadlock")
	}
	store.Unlock()
	<-joined
	if n := fs.Requesters(key); n != 0 {
		t.Fatalf("a retired flight still counts %d requesters", n)
	}
	g, leaveG, started, err := fs.Join(key, Cred{}, -1, createIn(t))
	if err != nil || !started || g == f {
		t.Fatalf("Join after Retire: started %v, same flight %v, %v", started, g == f, err)
	}
	leaveG()
	g.End(nil)
	f.End(nil)
}
