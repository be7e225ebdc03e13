package token

import (
	"encoding/base64"
	"strconv"
	"strings"
	"testing"
	"time"
)

// FuzzVerify: tokens arrive in URLs from anyone. Verify must not panic, and
// must accept only a token carrying the signature of the expiry it claims.
// (The encoding is not canonical: the base64 decoder skips CR and LF, so
// "<exp>.<sig with a \r inside>" verifies too. Harmless, same signature; the
// property below compares decoded signatures.)
func FuzzVerify(f *testing.F) {
	keys, _ := NewKeys("fuzz-secret")
	now := time.Unix(1_700_000_000, 0)
	subject := []byte("repo@sha256:abc")
	good := keys.Sign("blob", subject, now.Add(time.Minute))
	for _, s := range []string{good, "", ".", "1.", ".AAAA", "-1.AAAA", "99999999999999999999.x", good + "=", "0" + good, "+" + good} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		if keys.Verify("blob", subject, tok, now) != nil {
			return
		}
		expStr, sig, _ := strings.Cut(tok, ".")
		exp, err := strconv.ParseInt(expStr, 10, 64)
		if err != nil || exp < now.Unix() {
			t.Fatalf("accepted %q with expiry %q", tok, expStr)
		}
		_, want, _ := strings.Cut(keys.Sign("blob", subject, time.Unix(exp, 0)), ".")
		if got, err := base64.RawURLEncoding.DecodeString(sig); err != nil || base64.RawURLEncoding.EncodeToString(got) != want {
			t.Fatalf("accepted %q: signature is not the one for its expiry", tok)
		}
		if keys.Verify("torrent", subject, tok, now) == nil {
			t.Fatalf("%q verifies for another purpose", tok)
		}
	})
}
