package agent

import (
	"slices"
	"testing"
)

func TestClaimMessages(t *testing.T) {
	tests := []struct {
		name    string
		op      byte
		pieces  []int
		payload []byte // decoded instead of the encoding of op, pieces
		wantErr bool
	}{
		{name: "claim one", op: opClaim, pieces: []int{7}},
		{name: "release many", op: opRelease, pieces: []int{0, 1, 1 << 20}},
		{name: "empty", payload: []byte{}, wantErr: true},
		{name: "unknown op", payload: []byte{'x', 0, 0, 0, 1}, wantErr: true},
		{name: "truncated index", payload: []byte{opClaim, 0, 0, 1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := tt.payload
			if b == nil {
				b = encodeClaims(tt.op, tt.pieces)
			}
			op, pieces, err := decodeClaims(b)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decodeClaims(%v) error = %v, want error %v", b, err, tt.wantErr)
			}
			if err == nil && (op != tt.op || !slices.Equal(pieces, tt.pieces)) {
				t.Errorf("decodeClaims(encodeClaims(%c, %v)) = %c, %v", tt.op, tt.pieces, op, pieces)
			}
		})
	}
}
