package driver

import (
	"bytes"
	"testing"
)

// FuzzPieceState: the piece-hash state of an upload is read back from
// storage, which may hold anything (a damaged file, a shared bucket, another
// version's state). UnmarshalBinary must refuse what it cannot use without
// panicking or allocating by a claimed length, and a state it accepts must
// hash on consistently and survive another round trip.
func FuzzPieceState(f *testing.F) {
	for _, n := range []int{0, 1, 1023, 1024, 3000} {
		h := newUploadHasher(1024)
		h.Write(bytes.Repeat([]byte{7}, n))
		b, err := h.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{})
	f.Add([]byte{pieceStateVersion, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	f.Add([]byte{1, 0x80, 0x08, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		h := &pieceHasher{}
		if h.UnmarshalBinary(b) != nil {
			return
		}
		if h.pieceLength <= 0 || h.curLen >= h.pieceLength || int64(len(h.pieces)/20)*h.pieceLength+h.curLen != h.offset {
			t.Fatalf("accepted an inconsistent state: pl %d cur %d pieces %d offset %d", h.pieceLength, h.curLen, len(h.pieces), h.offset)
		}
		before := h.offset
		h.Write([]byte("more bytes"))
		if h.offset != before+10 {
			t.Fatalf("offset %d after writing 10 bytes at %d", h.offset, before)
		}
		out, err := h.MarshalBinary()
		if err != nil {
			t.Fatalf("accepted state does not marshal again: %v", err)
		}
		again := &pieceHasher{}
		if err := again.UnmarshalBinary(out); err != nil || !bytes.Equal(again.sum(), h.sum()) || again.offset != h.offset {
			t.Fatalf("round trip of an accepted state: %v", err)
		}
	})
}
