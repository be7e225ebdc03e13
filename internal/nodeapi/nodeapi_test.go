package nodeapi

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/secret"
)

func member(t testing.TB, a *cluster.Authority, name string) *cluster.Identity {
	t.Helper()
	id, err := a.Issue(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func authority(t testing.TB) *cluster.Authority {
	t.Helper()
	a, err := cluster.NewAuthority(secret.Generate())
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// Every way a forged or replayed heartbeat can differ from a real one is
// refused; only the untouched signed request passes.
func TestVerifyRefusesForgeries(t *testing.T) {
	auth, other := authority(t), authority(t)
	node := member(t, auth, "node-1")
	stranger := member(t, other, "node-1")
	now := time.Unix(1_800_000_000, 0)
	body := []byte(`{"id":"node-1","address":"https://10.0.0.1:65002"}`)
	signed := func(id *cluster.Identity, at time.Time) http.Header {
		h := http.Header{}
		Sign(h, id, http.MethodPost, HeartbeatPath, body, at)
		return h
	}
	cases := []struct {
		name   string
		header http.Header
		method string
		path   string
		body   []byte
		ok     bool
	}{
		{"genuine", signed(node, now), "POST", HeartbeatPath, body, true},
		{"no headers", http.Header{}, "POST", HeartbeatPath, body, false},
		{"foreign authority", signed(stranger, now), "POST", HeartbeatPath, body, false},
		{"body changed", signed(node, now), "POST", HeartbeatPath, []byte(`{"id":"node-1","address":"https://6.6.6.6:1"}`), false},
		{"path changed", signed(node, now), "POST", FetchPath, body, false},
		{"method changed", signed(node, now), "PUT", HeartbeatPath, body, false},
		{"stale", signed(node, now.Add(-2*time.Minute)), "POST", HeartbeatPath, body, false},
		{"from the future", signed(node, now.Add(2*time.Minute)), "POST", HeartbeatPath, body, false},
		{"signature of another key", func() http.Header {
			h := signed(node, now)
			h.Set(HeaderSignature, signed(member(t, auth, "node-2"), now).Get(HeaderSignature))
			return h
		}(), "POST", HeartbeatPath, body, false},
		{"timestamp changed", func() http.Header {
			h := signed(node, now)
			h.Set(HeaderTimestamp, "1800000001000000000")
			return h
		}(), "POST", HeartbeatPath, body, false},
		{"garbage certificate", func() http.Header {
			h := signed(node, now)
			h.Set(HeaderCertificate, "bm90IGEgY2VydA==")
			return h
		}(), "POST", HeartbeatPath, body, false},
	}
	for _, c := range cases {
		m, at, err := Verify(auth, c.header, c.method, c.path, c.body, now, time.Minute)
		if c.ok {
			if err != nil || m.Name != "node-1" || !m.Key.Equal(node.Public()) || !at.Equal(now) {
				t.Errorf("%s: %v %+v %v", c.name, err, m, at)
			}
			continue
		}
		if !errors.Is(err, ErrUnauthenticated) {
			t.Errorf("%s: accepted (%v)", c.name, err)
		}
	}
}

func TestCheckAddress(t *testing.T) {
	for in, want := range map[string]string{
		"https://10.0.0.1:65002":  "https://10.0.0.1:65002",
		"https://10.0.0.1:65002/": "https://10.0.0.1:65002",
		"https://[::1]:65002":     "https://[::1]:65002",
		"http://10.0.0.1:65002":   "",
		"https://10.0.0.1":        "",
		"https://u:p@h:1":         "",
		"https://h:1/x":           "",
		"https://h:1?q=1":         "",
		"https://h:0":             "",
		"https://:1":              "",
		"10.0.0.1:65002":          "",
	} {
		got, err := CheckAddress(in)
		if (err == nil) != (want != "") || got != want {
			t.Errorf("CheckAddress(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
}

// A client pinned to a node's key refuses an agent holding another key
// (an attacker member at the enrolled address) before sending anything,
// and refuses a server that is not a member at all.
func TestFetchOnlyReachesThePinnedNode(t *testing.T) {
	auth := authority(t)
	preheat := member(t, auth, "preheat")
	real, impostor := member(t, auth, "node-1"), member(t, auth, "node-1")
	var got []FetchRequest
	start := func(tlsID *cluster.Identity, a *cluster.Authority) *httptest.Server {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var fr FetchRequest
			_ = json.NewDecoder(r.Body).Decode(&fr)
			got = append(got, fr)
			_ = json.NewEncoder(w).Encode(FetchResponse{Digest: fr.Digest, Size: 1, Source: "cache"})
		}))
		srv.TLS = a.ServerTLS(tlsID)
		srv.StartTLS()
		t.Cleanup(srv.Close)
		return srv
	}
	c := NewClient(auth, preheat)
	ctx := context.Background()
	req := FetchRequest{Registry: "http://r", Repository: "x", Digest: "sha256:" + strings.Repeat("a", 64), Headers: map[string]string{"Authorization": "Bearer secret"}}

	good := start(real, auth)
	if fr, err := c.Fetch(ctx, good.URL, real.Public(), req); err != nil || fr.Source != "cache" {
		t.Fatalf("pinned fetch: %v %+v", err, fr)
	}
	bad := start(impostor, auth)
	_, err := c.Fetch(ctx, bad.URL, real.Public(), req)
	if !errors.Is(err, ErrUnreachable) || !IsPinMismatch(err) {
		t.Fatalf("impostor: %v", err)
	}
	foreign := start(member(t, authority(t), "node-1"), authority(t))
	if _, err := c.Fetch(ctx, foreign.URL, real.Public(), req); !errors.Is(err, ErrUnreachable) {
		t.Fatalf("non-member server: %v", err)
	}
	if _, err := c.Fetch(ctx, good.URL, nil, req); err == nil {
		t.Fatal("fetch without a pin was sent")
	}
	if _, err := c.Fetch(ctx, strings.Replace(good.URL, "https", "http", 1), real.Public(), req); err == nil {
		t.Fatal("fetch to a plain http address was sent")
	}
	if len(got) != 1 {
		t.Fatalf("agents received %d requests, want 1 (the pinned one)", len(got))
	}
}

// A non-200 answer is reduced to its status and a known code; the text is
// kept only as bounded Detail.
func TestFetchErrorIsClassified(t *testing.T) {
	auth := authority(t)
	node := member(t, auth, "n")
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusForbidden)
		_ = json.NewEncoder(w).Encode(ErrorBody{Error: strings.Repeat("<registry body>", 100), Code: "<script>"})
	}))
	srv.TLS = auth.ServerTLS(node)
	srv.StartTLS()
	defer srv.Close()
	_, err := NewClient(auth, member(t, auth, "preheat")).Fetch(context.Background(), srv.URL, node.Public(), FetchRequest{})
	var se *StatusError
	if !errors.As(err, &se) || se.Status != 403 || se.Code != "" || len(se.Detail) > 512 || strings.Contains(se.Error(), "registry body") {
		t.Fatalf("%#v", err)
	}
}

func FuzzVerify(f *testing.F) {
	auth := authority(f)
	node := member(f, auth, "node-1")
	h := http.Header{}
	now := time.Unix(1_800_000_000, 0)
	Sign(h, node, "POST", HeartbeatPath, []byte("{}"), now)
	f.Add(h.Get(HeaderCertificate), h.Get(HeaderTimestamp), h.Get(HeaderSignature), []byte("{}"))
	f.Add("", "", "", []byte(nil))
	f.Fuzz(func(t *testing.T, cert, ts, sig string, body []byte) {
		h := http.Header{}
		h.Set(HeaderCertificate, cert)
		h.Set(HeaderTimestamp, ts)
		h.Set(HeaderSignature, sig)
		m, _, err := Verify(auth, h, "POST", HeartbeatPath, body, now, time.Minute)
		if err == nil && (m.Name != "node-1" || !m.Key.Equal(ed25519.PublicKey(node.Public()))) {
			t.Fatalf("accepted someone else: %+v", m)
		}
	})
}

func TestHeartbeatCheck(t *testing.T) {
	dl := func(mod func(*Download)) Heartbeat {
		d := Download{Digest: "sha256:" + strings.Repeat("a", 64), Size: 8 << 30, BytesFromPeers: 3 << 30, BytesFromRegistry: 1 << 30, BytesPerSecond: 100 << 20}
		if mod != nil {
			mod(&d)
		}
		return Heartbeat{ID: "n", Downloads: []Download{d}}
	}
	for _, tc := range []struct {
		name string
		hb   Heartbeat
		ok   bool
	}{
		{"no downloads", Heartbeat{ID: "n"}, true},
		{"a download", dl(nil), true},
		{"size not known yet", dl(func(d *Download) { d.Size = -1 }), true},
		{"negative counter", Heartbeat{ID: "n", BytesFromPeers: -1}, false},
		{"too many", Heartbeat{ID: "n", Downloads: make([]Download, MaxDownloads+1)}, false},
		{"not a digest", dl(func(d *Download) { d.Digest = "<script>" }), false},
		{"more bytes than the size", dl(func(d *Download) { d.Size = 1 << 30 }), false},
		{"negative bytes", dl(func(d *Download) { d.BytesFromRegistry = -5 }), false},
		{"size below -1", dl(func(d *Download) { d.Size = -2 }), false},
		{"overflowing sum", dl(func(d *Download) { d.Size = -1; d.BytesFromPeers, d.BytesFromRegistry = 1<<62, 1<<62 }), false},
	} {
		if err := tc.hb.Check(); (err == nil) != tc.ok {
			t.Errorf("%s: Check() = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
