package tracker

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
)

// FuzzAnnounce drives arbitrary query strings through the whole announce
// handler: it must always answer a bencoded dictionary with either a failure
// reason or an interval, and never panic (the recover middleware is left out
// so a panic fails the fuzz run).
func FuzzAnnounce(f *testing.F) {
	cfg := testConfig()
	s, err := NewWithStore(cfg, NewMemoryStore(time.Hour))
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	h := ih(1)
	tok := s.keys.Sign(PurposeAnnounce, h[:], time.Now().Add(24*time.Hour))
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
