package agent

import (
	"strings"
	"testing"
)

// Range headers come from clients: any string, any blob size.
func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"", "bytes=0-99", "bytes=-5", "bytes=7-", "bytes=0-1,2-3", "bytes=--1", "bytes=9223372036854775806-9223372036854775807", "bytes=-9223372036854775808"} {
		f.Add(s, int64(1000))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size <= 0 {
			return // blobs the agent serves have a size
		}
		var values []string
		if h != "" {
			values = []string{h}
		}
		start, end, partial, err := parseRange(values, size)
		if err != nil {
			return
		}
		if start < 0 || end < start || end >= size {
			t.Fatalf("parseRange(%q, %d) = [%d, %d]: outside the blob", h, size, start, end)
		}
		if !partial && (start != 0 || end != size-1 || h != "") {
			t.Fatalf("parseRange(%q, %d): whole blob answer [%d, %d]", h, size, start, end)
		}
	})
}

// Digests come from request paths and control requests.
func FuzzParseDigest(f *testing.F) {
	for _, s := range []string{"sha256:" + strings.Repeat("a", 64), "sha512:" + strings.Repeat("0", 128), "sha256:", ":", "md5:00", "sha256:" + strings.Repeat("A", 64)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		algo, hexd, err := parseDigest(s)
		if err != nil {
			return
		}
		want := map[string]int{"sha256": 64, "sha512": 128}[algo]
		if want == 0 || len(hexd) != want || !validLowerHex(hexd) || algo+":"+hexd != s {
			t.Fatalf("parseDigest(%q) = %q, %q", s, algo, hexd)
		}
	})
}

func validLowerHex(s string) bool {
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}
