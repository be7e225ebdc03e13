package httprange

import "testing"

func TestParseRange(t *testing.T) {
	tests := []struct {
		values   []string
		size     int64
		start, n int64
		ok       bool
	}{
		{[]string{"bytes=0-99"}, 1000, 0, 100, true},
		{[]string{" bytes=10-19 "}, 1000, 10, 10, true},
		{[]string{"bytes=990-2000"}, 1000, 990, 10, true},
		{[]string{"bytes=999-"}, 1000, 999, 1, true},
		{[]string{"bytes=-1"}, 1000, 999, 1, true},
		{[]string{"bytes=-5000"}, 1000, 0, 1000, true},
		{[]string{"bytes=0-9223372036854775807"}, 1000, 0, 1000, true},
		{[]string{"bytes=1000-"}, 1000, 0, 0, false},
		{[]string{"bytes=0-0"}, 0, 0, 0, false},
		{[]string{"bytes=-1"}, 0, 0, 0, false},
		{[]string{"bytes=-0"}, 1000, 0, 0, false},
		{[]string{"bytes=5-4"}, 1000, 0, 0, false},
		{[]string{"bytes=0-1,2-3"}, 1000, 0, 0, false},
		{[]string{"bytes=0-1", "bytes=2-3"}, 1000, 0, 0, false},
		{[]string{"bytes=0-9223372036854775808"}, 1000, 0, 0, false},
		{[]string{"bytes=+0-1"}, 1000, 0, 0, false},
		{[]string{"bytes=0x1-2"}, 1000, 0, 0, false},
		{[]string{"bytes = 0-1"}, 1000, 0, 0, false},
		{[]string{"bytes=-"}, 1000, 0, 0, false},
		{[]string{"bytes="}, 1000, 0, 0, false},
		{[]string{"Bytes=0-1"}, 1000, 0, 0, false},
		{[]string{""}, 1000, 0, 0, false},
		{nil, 1000, 0, 0, false},
	}
	for _, tc := range tests {
		start, n, ok := Parse(tc.values, tc.size)
		if ok != tc.ok || (ok && (start != tc.start || n != tc.n)) {
			t.Errorf("Parse(%q, %d) = %d, %d, %t; want %d, %d, %t", tc.values, tc.size, start, n, ok, tc.start, tc.n, tc.ok)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-99", "bytes=-5", "bytes=7-", "bytes=0-1,2-3", "bytes=9223372036854775806-9223372036854775807", "bytes=--1"} {
		f.Add(s, int64(1000))
	}
	f.Fuzz(func(t *testing.T, value string, size int64) {
		if size < 0 {
			size = -(size + 1)
		}
		start, n, ok := Parse([]string{value}, size)
		if !ok {
			return
		}
		if start < 0 || n <= 0 || start >= size || n > size-start {
			t.Fatalf("Parse(%q, %d) = %d, %d: outside the blob", value, size, start, n)
		}
	})
}
