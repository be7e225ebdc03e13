package token

import (
	"errors"
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
