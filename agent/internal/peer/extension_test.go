package peer

import (
	"slices"
	"testing"

	"github.com/anacrolix/torrent"
)

func TestExtensionMessages(t *testing.T) {
	tests := []struct {
		name    string
		payload []byte
		op      byte
		pieces  []int
		port    int
		wantErr bool
	}{
		{name: "claim one", payload: encodeClaims(opClaim, []int{7}), op: opClaim, pieces: []int{7}},
		{name: "release many", payload: encodeClaims(opRelease, []int{0, 1, 1 << 20}), op: opRelease, pieces: []int{0, 1, 1 << 20}},
		{name: "data port", payload: encodeDataPort(opData, 40123), op: opData, port: 40123},
		{name: "data port, asking back", payload: encodeDataPort(opDataAsk, 1), op: opDataAsk, port: 1},
		{name: "data port zero", payload: encodeDataPort(opData, 0), wantErr: true},
		{name: "data port truncated", payload: []byte{opData, 1}, wantErr: true},
		{name: "empty", payload: []byte{}, wantErr: true},
		{name: "unknown op", payload: []byte{'x', 0, 0, 0, 1}, wantErr: true},
		{name: "truncated index", payload: []byte{opClaim, 0, 0, 1}, wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			op, pieces, port, err := decodeExtension(tt.payload)
			if (err != nil) != tt.wantErr {
				t.Fatalf("decodeExtension(%v) error = %v, want error %v", tt.payload, err, tt.wantErr)
			}
			if err == nil && (op != tt.op || !slices.Equal(pieces, tt.pieces) || port != tt.port) {
				t.Errorf("decodeExtension(%v) = %c, %v, %d", tt.payload, op, pieces, port)
			}
		})
	}
}

func FuzzDecodeExtension(f *testing.F) {
	f.Add(encodeClaims(opClaim, []int{1, 2}))
	f.Add(encodeDataPort(opData, 6881))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, b []byte) {
		op, pieces, port, err := decodeExtension(b)
		if err != nil {
			return
		}
		if op == opClaim || op == opRelease {
			// Whatever a node claims, a blob of 4 pieces holds at most 4
			// claims of it.
			s := newSwarm(nil, nil, 4<<20, 4)
			s.receivedClaims(torrent.PeerID{}, op, pieces)
			if len(s.claims) > 4 {
				t.Fatalf("%d claims stored for a blob of 4 pieces", len(s.claims))
			}
		} else if port <= 0 || port > 65535 {
			t.Fatalf("data port %d", port)
		}
		var again []byte
		if op == opData || op == opDataAsk {
			again = encodeDataPort(op, port)
		} else {
			again = encodeClaims(op, pieces)
		}
		if !slices.Equal(again, b) {
			t.Fatalf("decode/encode changed %v into %v", b, again)
		}
	})
}

// Claims name pieces of the blob only: an index beyond it, as a
// misbehaving node could send by the million, is not stored.
func TestReceivedClaimsBounded(t *testing.T) {
	s := newSwarm(nil, nil, 4<<20, 4)
	var from torrent.PeerID
	s.receivedClaims(from, opClaim, []int{0, 3, 4, 1 << 30, -1})
	if len(s.claims) != 2 {
		t.Fatalf("%d claims stored, want 2 (pieces 0 and 3): %v", len(s.claims), s.claims)
	}
}
