package store

import "testing"

func TestReaderHasRange(t *testing.T) {
	present := map[int]bool{0: true, 1: true, 3: true}
	r := NewReader(nil, 100, 350, func(i int) bool { return present[i] })
	for _, tc := range []struct {
		off, n int64
		want   bool
	}{
		{0, 200, true},
		{150, 50, true},
		{150, 60, false}, // reaches piece 2
		{300, 50, true},  // the short last piece
		{300, 51, false}, // beyond the blob
		{-1, 10, false},
		{0, 0, false},
	} {
		if got := r.HasRange(tc.off, tc.n); got != tc.want {
			t.Errorf("HasRange(%d, %d) = %v, want %v", tc.off, tc.n, got, tc.want)
		}
	}
}
