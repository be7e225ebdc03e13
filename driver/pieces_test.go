package driver

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
)

func TestPieceHasherMatchesLibrary(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, size := range []int{0, 1, 1023, 1024, 1025, 4096, 10_000} {
		data := make([]byte, size)
		for i := range data {
			data[i] = byte(rng.Uint32())
		}
		want, err := metainfo.GeneratePieces(bytes.NewReader(data), 1024, nil)
		if err != nil {
			t.Fatal(err)
		}
		// Write in uneven chunks, round-tripping the state through bytes
		// between chunks as a chunked upload across restarts would.
		h := newPieceHasher(1024)
		for off := 0; off < size; {
			n := min(size-off, 1+rng.IntN(1500))
			h.Write(data[off : off+n])
			off += n
			b, err := h.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			h = &pieceHasher{}
			if err := h.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
		}
		if got := h.sum(); !bytes.Equal(got, want) {
			t.Errorf("size %d: pieces differ from metainfo.GeneratePieces", size)
		}
		if h.offset != int64(size) {
			t.Errorf("size %d: offset %d", size, h.offset)
		}
	}
}

func TestPieceHasherRejectsGarbage(t *testing.T) {
	h := newPieceHasher(1024)
	h.Write(make([]byte, 3000))
	good, _ := h.MarshalBinary()
	for name, b := range map[string][]byte{
		"empty":       nil,
		"version":     append([]byte{9}, good[1:]...),
		"truncated":   good[:5],
		"short sha1":  good[:len(good)-10],
		"bad offset":  append([]byte{1, 0x80, 0x08, 0x01}, good[4:]...),
		"only header": {1},
	} {
		if err := new(pieceHasher).UnmarshalBinary(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
