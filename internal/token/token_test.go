package token

import (
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerify(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	old, _ := NewKeys("old-secret")
	rotated, _ := NewKeys("new-secret", "old-secret")
	other, _ := NewKeys("someone-else")
	subject := []byte("infohash-1")
	good := old.Sign("announce", subject, now.Add(time.Minute))

	tests := []struct {
		name    string
		keys    *Keys
		purpose string
		subject []byte
		tok     string
		now     time.Time
		want    error
	}{
		{"valid", old, "announce", subject, good, now, nil},
		{"valid after rotation", rotated, "announce", subject, good, now, nil},
		{"new signer", rotated, "announce", subject, rotated.Sign("announce", subject, now.Add(time.Minute)), now, nil},
		{"missing", old, "announce", subject, "", now, ErrMissing},
		{"no dot", old, "announce", subject, "abc", now, ErrMalformed},
		{"bad expiry", old, "announce", subject, "x." + good[11:], now, ErrMalformed},
		{"bad base64", old, "announce", subject, "1.!!!", now, ErrMalformed},
		{"tampered expiry", old, "announce", subject, "9" + good[1:], now, ErrInvalid},
		{"other subject", old, "announce", []byte("infohash-2"), good, now, ErrInvalid},
		{"other purpose", old, "torrent", subject, good, now, ErrInvalid},
		{"foreign secret", other, "announce", subject, good, now, ErrInvalid},
		{"expired", old, "announce", subject, good, now.Add(2 * time.Minute), ErrExpired},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.keys.Verify(tc.purpose, tc.subject, tc.tok, tc.now); !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestNewKeysRejectsEmpty(t *testing.T) {
	if _, err := NewKeys(); err == nil {
		t.Fatal("no secrets accepted")
	}
	if _, err := NewKeys("a", ""); err == nil {
		t.Fatal("empty secret accepted")
	}
}

// TestOneSpelling is finding 7 of issue 22: other spellings of one signed
// token (a sign or leading zeros on the expiry, CR/LF inside the
// signature, another final base64 character) were accepted.
func TestOneSpelling(t *testing.T) {
	keys, _ := NewKeys("0123456789abcdef0123456789abcdef")
	now := time.Unix(1_700_000_000, 0)
	subject := []byte("s")
	good := keys.Sign(PurposeAnnounce, subject, now.Add(time.Hour))
	if err := keys.Verify(PurposeAnnounce, subject, good, now); err != nil {
		t.Fatal(err)
	}
	exp, sig, _ := strings.Cut(good, ".")
	last := sig[len(sig)-1]
	// The signature is 32 bytes: 43 characters whose last carries 4 bits
	// of data and 2 zero bits; flipping those bits keeps the decoded bytes.
	other := string(rune(last))
	for _, c := range "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_" {
		if c != rune(last) && strings.IndexRune("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", c)>>2 == strings.IndexByte("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_", last)>>2 {
			other = string(c)
			break
		}
	}
	for name, tok := range map[string]string{
		"plus sign":        "+" + good,
		"leading zero":     "0" + good,
		"two zeros":        "00" + good,
		"CR in signature":  exp + "." + sig[:10] + "\r" + sig[10:],
		"LF in signature":  exp + "." + sig[:10] + "\n" + sig[10:],
		"CRLF at the end":  good + "\r\n",
		"other final char": exp + "." + sig[:len(sig)-1] + other,
		"padding":          good + "=",
	} {
		if err := keys.Verify(PurposeAnnounce, subject, tok, now); err == nil {
			t.Errorf("%s: %q accepted", name, tok)
		}
	}
	// A one-bit forgery stays refused.
	b := []byte(good)
	b[len(exp)+3] ^= 1
	if err := keys.Verify(PurposeAnnounce, subject, string(b), now); err == nil {
		t.Error("forgery accepted")
	}
}
