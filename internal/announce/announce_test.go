package announce

import (
	"errors"
	"net/http"
	"testing"
	"time"
)

const (
	secretA = "0123456789abcdef0123456789abcdef-a"
	secretB = "0123456789abcdef0123456789abcdef-b"
)

func signed(t *testing.T, secret, member, query string, at time.Time) *http.Request {
	t.Helper()
	s, err := NewSigner(secret, member)
	if err != nil {
		t.Fatal(err)
	}
	s.now = func() time.Time { return at }
	r, _ := http.NewRequest(http.MethodGet, "http://tracker/announce?"+query, nil)
	if err := s.Sign(r); err != nil {
		t.Fatal(err)
	}
	return r
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	v, err := NewVerifier(time.Minute, secretA, secretB) // B: the previous secret
	if err != nil {
		t.Fatal(err)
	}
	const q = "info_hash=%01&peer_id=x&port=1&left=0"
	tests := []struct {
		name   string
		req    func() *http.Request
		member string
		want   error
	}{
		{"current secret", func() *http.Request { return signed(t, secretA, "node-1", q, now) }, "node-1", nil},
		{"previous secret", func() *http.Request { return signed(t, secretB, "node-1", q, now) }, "node-1", nil},
		{"other cluster", func() *http.Request { return signed(t, "another-cluster-secret-0123456789abcdef", "node-1", q, now) }, "", ErrInvalid},
		{"unsigned", func() *http.Request { r, _ := http.NewRequest(http.MethodGet, "http://t/announce?"+q, nil); return r }, "", ErrUnsigned},
		{"query changed (left=0 claimed after signing)", func() *http.Request {
			r := signed(t, secretA, "node-1", "info_hash=%01&peer_id=x&port=1&left=9", now)
			r.URL.RawQuery = q
			return r
		}, "", ErrInvalid},
		{"member renamed", func() *http.Request {
			r := signed(t, secretA, "node-1", q, now)
			r.Header.Set(HeaderMember, "node-2")
			return r
		}, "", ErrInvalid},
		{"too old", func() *http.Request { return signed(t, secretA, "node-1", q, now.Add(-2*time.Minute)) }, "", ErrStale},
		{"from the future", func() *http.Request { return signed(t, secretA, "node-1", q, now.Add(2*time.Minute)) }, "", ErrStale},
		{"garbage", func() *http.Request {
			r := signed(t, secretA, "node-1", q, now)
			r.Header.Set(HeaderSignature, "x.y")
			return r
		}, "", ErrMalformed},
		{"signature without member", func() *http.Request {
			r := signed(t, secretA, "node-1", q, now)
			r.Header.Del(HeaderMember)
			return r
		}, "", ErrMalformed},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := tc.req()
			m, err := v.Verify(r.Header, r.URL.RawQuery, now)
			if !errors.Is(err, tc.want) || m != tc.member {
				t.Fatalf("Verify = %q, %v; want %q, %v", m, err, tc.member, tc.want)
			}
		})
	}
}

func TestNewSignerRefusesBadInput(t *testing.T) {
	if _, err := NewSigner("", "node-1"); err == nil {
		t.Fatal("empty secret accepted")
	}
	if _, err := NewSigner(secretA, ""); err == nil {
		t.Fatal("empty member accepted")
	}
	if _, err := NewVerifier(time.Minute); err == nil {
		t.Fatal("verifier without secrets")
	}
}

// FuzzVerify: the headers come from anyone. Verify must not panic and must
// accept nothing it did not sign.
func FuzzVerify(f *testing.F) {
	v, _ := NewVerifier(time.Hour, secretA)
	now := time.Unix(1_800_000_000, 0)
	good := signed(&testing.T{}, secretA, "node-1", "a=1", now)
	f.Add("node-1", good.Header.Get(HeaderSignature), "a=1")
	f.Add("", "", "")
	f.Add("n", "1.", "")
	f.Add("n", "-1.AAAA", "x")
	f.Fuzz(func(t *testing.T, member, sig, query string) {
		h := http.Header{}
		if member != "" {
			h[HeaderMember] = []string{member}
		}
		if sig != "" {
			h[HeaderSignature] = []string{sig}
		}
		m, err := v.Verify(h, query, now)
		if err != nil {
			return
		}
		// (The signature's base64 need not be canonical; what it signs must
		// be exactly what was signed.)
		if m != "node-1" || member != "node-1" || query != "a=1" {
			t.Fatalf("accepted member %q sig %q query %q", member, sig, query)
		}
	})
}

func TestDirector(t *testing.T) {
	r, _ := http.NewRequest(http.MethodGet, "http://t/announce?a=1", nil)
	if err := Director(secretA, "node-1")(r); err != nil || r.Header.Get(HeaderMember) != "node-1" {
		t.Fatalf("director: %v %v", err, r.Header)
	}
	v, _ := NewVerifier(time.Minute, secretA)
	if m, err := v.Verify(r.Header, r.URL.RawQuery, time.Now()); err != nil || m != "node-1" {
		t.Fatalf("verify = %q %v", m, err)
	}
	if err := Director("", "node-1")(r); err == nil {
		t.Fatal("director with no secret signed")
	}
}
