package peerid

import "testing"

func TestNew(t *testing.T) {
	tests := []struct {
		prefix string
		origin bool
	}{
		{OriginPrefix, true},
		{NodePrefix, false},
	}
	for _, tt := range tests {
		a, b := New(tt.prefix), New(tt.prefix)
		if len(a) != 20 || a[:len(tt.prefix)] != tt.prefix {
			t.Fatalf("New(%q) = %q: want 20 bytes with that prefix", tt.prefix, a)
		}
		if a == b {
			t.Fatalf("New(%q) returned %q twice", tt.prefix, a)
		}
		var id [20]byte
		copy(id[:], a)
		if got := IsOrigin(id); got != tt.origin {
			t.Errorf("IsOrigin(%q) = %v, want %v", a, got, tt.origin)
		}
	}
}
