package tracker

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/shoalproject/shoal/internal/token"
)

// FuzzAnnounce drives arbitrary query strings through the whole announce
// handler: it must always answer a bencoded dictionary with either a failure
// reason or an interval, and never panic (the recover middleware is left out
// so a panic fails the fuzz run).
func FuzzAnnounce(f *testing.F) {
	cfg := testConfig()
	s, err := New(cfg, Deps{Store: NewMemoryStore(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	h := ih(1)
	tok := s.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(24*time.Hour))
	id := pid(1)
	valid := url.Values{"info_hash": {string(h[:])}, "peer_id": {string(id[:])}, "port": {"6881"}, "token": {tok}}
	f.Add(valid.Encode())
	f.Add(valid.Encode() + "&compact=0&numwant=5&group=zone-a&event=started&left=0")
	f.Add(valid.Encode() + "&numwant=-1&event=stopped")
	f.Add(valid.Encode() + "&numwant=99999999999999999999999")
	f.Add("info_hash=%00%00&peer_id=x&port=-1")
	f.Add("%zz=1")
	f.Add("")
	f.Add("port=65535&port=1&info_hash=" + strings.Repeat("%ff", 20))
	f.Fuzz(func(t *testing.T, q string) {
		if len(q) > 4096 {
			return
		}
		// Build the request by hand: httptest.NewRequest panics on URLs
		// a real client could still send.
		r := httptest.NewRequest(http.MethodGet, "/announce", nil)
		r.URL.RawQuery = q
		w := httptest.NewRecorder()
		s.handleAnnounce(w, r)
		var m map[string]any
		if err := bencode.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("query %q: response %q not a bencoded dict: %v", q, w.Body.Bytes(), err)
		}
		_, failed := m["failure reason"]
		_, hasInterval := m["interval"]
		if failed == hasInterval {
			t.Fatalf("query %q: want exactly one of failure reason / interval: %v", q, m)
		}
	})
}

// FuzzParseAnnounce checks the parser's invariants directly.
func FuzzParseAnnounce(f *testing.F) {
	f.Add("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&numwant=500")
	f.Add("info_hash=aaaaaaaaaaaaaaaaaaaa&peer_id=bbbbbbbbbbbbbbbbbbbb&port=1&numwant=-7&left=3")
	f.Add("numwant=1e9")
	f.Fuzz(func(t *testing.T, q string) {
		a, err := parseAnnounce(q, 50, 200)
		if err != nil {
			if _, ok := err.(badRequest); !ok {
				t.Fatalf("non-client error %T %v", err, err)
			}
			return
		}
		if a.numwant < 0 || a.numwant > 200 || a.port == 0 || len(a.group) > maxGroupLen {
			t.Fatalf("query %q parsed to out-of-range %+v", q, a)
		}
	})
}

// FuzzScrape drives arbitrary query strings through the scrape handler:
// always a bencoded dictionary (files or a failure reason), never a panic,
// never counts for an infohash no token covers.
func FuzzScrape(f *testing.F) {
	s, err := New(testConfig(), Deps{Store: NewMemoryStore(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	h := ih(1)
	tok := s.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(24*time.Hour))
	f.Add(url.Values{"info_hash": {string(h[:])}, "token": {tok}}.Encode())
	f.Add(url.Values{"info_hash": {string(h[:]), string(h[:])}, "token": {tok, "x"}}.Encode())
	f.Add("info_hash=short&token=" + tok)
	f.Add("info_hash=" + strings.Repeat("%01", 20))
	f.Add("%zz")
	f.Add("")
	f.Fuzz(func(t *testing.T, q string) {
		if len(q) > 8192 {
			return
		}
		r := httptest.NewRequest(http.MethodGet, "/scrape", nil)
		r.URL.RawQuery = q
		w := httptest.NewRecorder()
		s.handleScrape(w, r)
		var m map[string]any
		if err := bencode.Unmarshal(w.Body.Bytes(), &m); err != nil {
			t.Fatalf("query %q: response %q not a bencoded dict: %v", q, w.Body.Bytes(), err)
		}
		files, ok := m["files"].(map[string]any)
		_, failed := m["failure reason"]
		if ok == failed {
			t.Fatalf("query %q: want exactly one of files / failure reason: %v", q, m)
		}
		for k := range files {
			if k != string(h[:]) {
				t.Fatalf("query %q: counts for an infohash no token covers: %x", q, k)
			}
		}
	})
}

// FuzzRequestIP: with realIPHeader set, the header is client input (a
// proxy may pass it through); a peer's IP is either a valid address or an
// error, never a panic.
func FuzzRequestIP(f *testing.F) {
	s, err := New(testConfig(), Deps{Store: NewMemoryStore(time.Hour)})
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	s.cfg.RealIPHeader = "X-Forwarded-For"
	for _, v := range []string{"192.0.2.1", "192.0.2.1, 10.0.0.1", "::ffff:10.0.0.1", "fe80::1%eth0", "", ",", " 1.2.3.4 ,x"} {
		f.Add(v, "10.1.2.3:5555")
	}
	f.Add("", "garbage")
	f.Fuzz(func(t *testing.T, header, remote string) {
		r := httptest.NewRequest(http.MethodGet, "/announce", nil)
		r.RemoteAddr = remote
		if header != "" {
			r.Header["X-Forwarded-For"] = []string{header}
		}
		ip, err := s.requestIP(r)
		if err == nil && (!ip.IsValid() || ip.Is4In6()) {
			t.Fatalf("header %q remote %q: accepted %v", header, remote, ip)
		}
	})
}

// FuzzDecodePeer: peer records come back from Redis, shared by every
// replica; a damaged one must cost a candidate, not a panic, and an accepted
// one must be what encoding it again gives. A member's record keys it by
// its name's hash, which the record does not hold (the hand-out does not
// need the name): beyond that hash it must encode again the same.
func FuzzDecodePeer(f *testing.F) {
	f.Add(encodePeer(Peer{ID: pid(1), Addr: netip.MustParseAddrPort("127.0.0.1:6881"), Class: ClassComplete, Group: "zone-a"}))
	f.Add(encodePeer(Peer{ID: pid(2), Addr: netip.MustParseAddrPort("[2001:db8::1]:1"), Class: ClassOrigin}))
	f.Add([]byte("short"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p, err := decodePeer(b)
		if err != nil {
			return
		}
		if p.Class >= numClasses {
			t.Fatalf("accepted class %d", p.Class)
		}
		from := 0
		if b[peerKeyLen]&memberRecord != 0 {
			p.Member, from = "any member", 20
		}
		if again := encodePeer(p); !bytes.Equal(again[from:], b[from:]) {
			t.Fatalf("record %x decodes to %+v, which encodes to %x", b, p, again)
		}
	})
}
