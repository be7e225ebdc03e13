package token

import (
	"testing"
	"time"
)

// FuzzVerify: tokens arrive in URLs from anyone. Verify must not panic,
// must accept only a token carrying the signature of the expiry it claims,
// and a token has one spelling: whatever parse accepts, format spells back
// byte for byte (decode∘encode is the identity on accepted inputs).
func FuzzVerify(f *testing.F) {
	keys, _ := NewKeys("fuzz-secret")
	now := time.Unix(1_700_000_000, 0)
	subject := []byte("repo@sha256:abc")
	good := keys.Sign("blob", subject, now.Add(time.Minute))
	for _, s := range []string{good, "", ".", "1.", ".AAAA", "-1.AAAA", "99999999999999999999.x", good + "=", "0" + good, "+" + good,
		good[:20] + "\r" + good[20:], good[:len(good)-1] + "B"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if exp, sig, err := parse(tok); err == nil {
			if again := format(exp, sig); again != tok {
				t.Fatalf("parse accepted %q, which format spells %q", tok, again)
			}
		}
		if keys.Verify("blob", subject, tok, now) != nil {
			return
		}
		exp, _, err := parse(tok)
		if err != nil || exp < now.Unix() {
			t.Fatalf("accepted %q", tok)
		}
		if want := keys.Sign("blob", subject, time.Unix(exp, 0)); want != tok {
			t.Fatalf("accepted %q: not the token signed for its expiry (%q)", tok, want)
		}
		if keys.Verify("torrent", subject, tok, now) == nil {
			t.Fatalf("%q verifies for another purpose", tok)
		}
	})
}
