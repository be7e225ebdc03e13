package nodes_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/preheat/nodes"
)

// Every way a heartbeat is refused, and what an accepted one records; the
// clock is a value, the stores the memory ones.
func TestEnrollerAccept(t *testing.T) {
	auth, err := cluster.NewAuthority(secret.Generate())
	if err != nil {
		t.Fatal(err)
	}
	other, _ := cluster.NewAuthority(secret.Generate())
	issue := func(a *cluster.Authority, name string) *cluster.Identity {
		id, err := a.Issue(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	n1, n1again, stranger := issue(auth, "n1"), issue(auth, "n1"), issue(other, "n1")
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	good := nodeapi.Heartbeat{ID: "n1", Address: "https://10.0.0.1:5003", Groups: []string{"b", "a", "b"}, CacheFreeBytes: 5}
	type send struct {
		ident *cluster.Identity
		hb    any
		at    time.Duration // signed at now + at
	}
	for _, c := range []struct {
		name   string
		before []send // accepted first
		send   send
		status int // 0: accepted
		code   string
		msg    string
	}{
		{name: "accepted", send: send{n1, good, 0}},
		{name: "unsigned", send: send{nil, good, 0}, status: 401},
		{name: "another cluster", send: send{stranger, good, 0}, status: 401},
		{name: "stale", send: send{n1, good, -time.Hour}, status: 401},
		{name: "signed for another id", send: send{n1, nodeapi.Heartbeat{ID: "n2", Address: "https://10.0.0.1:5003"}, 0}, status: 401, msg: `heartbeat for node "n2" signed by the certificate of "n1"`},
		{name: "not JSON", send: send{n1, "{", 0}, status: 400, msg: "malformed heartbeat JSON"},
		{name: "plain http address", send: send{n1, nodeapi.Heartbeat{ID: "n1", Address: "http://10.0.0.1:5003"}, 0}, status: 400},
		{name: "negative counter", send: send{n1, nodeapi.Heartbeat{ID: "n1", Address: "https://10.0.0.1:5003", BytesFromPeers: -1}, 0}, status: 400,
			msg: "heartbeat byte counts must not be negative"},
		{name: "download past its size", send: send{n1, nodeapi.Heartbeat{ID: "n1", Address: "https://10.0.0.1:5003",
			Downloads: []nodeapi.Download{{Digest: "sha256:" + strings.Repeat("ab", 32), Size: 10, BytesFromPeers: 11}}}, 0}, status: 400,
			msg: "heartbeat download 0: 11 bytes of a 10-byte blob"},
		{name: "replayed", before: []send{{n1, good, 0}}, send: send{n1, good, 0}, status: 401, msg: "replayed"},
		{name: "newer from the same key", before: []send{{n1, good, -time.Second}}, send: send{n1, good, 0}},
		{name: "another key for an enrolled id", before: []send{{n1, good, -time.Second}}, send: send{n1again, good, 0}, status: 409,
			code: nodes.CodeKeyMismatch, msg: "enrolled with another key"},
	} {
		t.Run(c.name, func(t *testing.T) {
			st := nodes.NewMemory(func() time.Time { return now })
			e := &nodes.Enroller{Authority: auth, Keys: st, Nodes: st, MaxSkew: time.Minute, TTL: 30 * time.Second, KeyRetention: 24 * time.Hour}
			accept := func(s send) (nodes.Node, error) {
				b, _ := json.Marshal(s.hb)
				if str, ok := s.hb.(string); ok {
					b = []byte(str)
				}
				h := http.Header{}
				if s.ident != nil {
					nodeapi.Sign(h, s.ident, http.MethodPost, nodeapi.HeartbeatPath, b, now.Add(s.at))
				}
				return e.Accept(t.Context(), now, h, b)
			}
			for _, s := range c.before {
				if _, err := accept(s); err != nil {
					t.Fatal(err)
				}
			}
			n, err := accept(c.send)
			var r *nodes.Refusal
			if c.status == 0 {
				if err != nil {
					t.Fatal(err)
				}
				ns, _ := st.ListNodes(t.Context())
				if len(ns) != 1 || ns[0].ID != "n1" || strings.Join(ns[0].Groups, ",") != "a,b" || !ns[0].Alive(now) ||
					ns[0].KeyFingerprint != nodeapi.Fingerprint(c.send.ident.Public()) || n.ID != "n1" {
					t.Fatalf("stored %+v", ns)
				}
				return
			}
			if !errors.As(err, &r) || r.Status != c.status || r.Code != c.code || !strings.Contains(r.Msg, c.msg) {
				t.Fatalf("err %v (%#v), want %d %q with %q", err, r, c.status, c.code, c.msg)
			}
			if c.code == nodes.CodeKeyMismatch && (r.NodeID != "n1" || !r.Pinned.Equal(n1.Public()) || !r.Presented.Equal(n1again.Public())) {
				t.Fatalf("mismatch refusal names %q %x %x", r.NodeID, r.Pinned, r.Presented)
			}
			if ns, _ := st.ListNodes(t.Context()); len(c.before) == 0 && len(ns) != 0 {
				t.Fatalf("a refused heartbeat was recorded: %+v", ns)
			}
		})
	}
}

// A heartbeat refused for its content is not the node's newest: the same
// node's next heartbeat with the same timestamp is no replay.
func TestEnrollerRefusalKeepsNothing(t *testing.T) {
	auth, err := cluster.NewAuthority(secret.Generate())
	if err != nil {
		t.Fatal(err)
	}
	n1, err := auth.Issue("n1", nil)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	st := nodes.NewMemory(func() time.Time { return now })
	e := &nodes.Enroller{Authority: auth, Keys: st, Nodes: st, MaxSkew: time.Minute, TTL: 30 * time.Second, KeyRetention: time.Hour}
	send := func(hb nodeapi.Heartbeat) error {
		b, _ := json.Marshal(hb)
		h := http.Header{}
		nodeapi.Sign(h, n1, http.MethodPost, nodeapi.HeartbeatPath, b, now)
		_, err := e.Accept(t.Context(), now, h, b)
		return err
	}
	if err := send(nodeapi.Heartbeat{ID: "n1", Address: "https://10.0.0.1:5003", CacheUsedBytes: -1}); err == nil {
		t.Fatal("negative count accepted")
	}
	if _, err := st.NodeKey(t.Context(), "n1"); !errors.Is(err, nodes.ErrNotFound) {
		t.Fatalf("a refused heartbeat enrolled its key: %v", err)
	}
	if err := send(nodeapi.Heartbeat{ID: "n1", Address: "https://10.0.0.1:5003"}); err != nil {
		t.Fatalf("heartbeat after a refused one: %v", err)
	}
}
