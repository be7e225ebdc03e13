package driver

import (
	"bytes"
	"math/rand/v2"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/opencontainers/go-digest"
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
		h := newUploadHasher(1024)
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
		if !h.describes(digest.FromBytes(data), int64(size)) {
			t.Errorf("size %d: the stream digest does not survive the round trips", size)
		}
		if h.describes(digest.FromBytes(append(data, 0)), int64(size)) || h.describes(digest.FromBytes(data), int64(size)+1) {
			t.Errorf("size %d: describes other bytes", size)
		}
	}
}

func TestPieceHasherRejectsGarbage(t *testing.T) {
	h := newUploadHasher(1024)
	h.Write(make([]byte, 3000))
	good, err := h.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if err := new(pieceHasher).UnmarshalBinary(good); err != nil {
		t.Fatal(err)
	}
	for name, b := range map[string][]byte{
		"empty":       nil,
		"version":     append([]byte{9}, good[1:]...),
		"truncated":   good[:5],
		"short sha1":  good[:len(good)-10],
		"bad offset":  append([]byte{pieceStateVersion, 0x80, 0x08, 0x01}, good[4:]...),
		"version 1":   append([]byte{1}, good[1:]...),
		"no sha256":   good[:len(good)-20],
		"only header": {1},
	} {
		if err := new(pieceHasher).UnmarshalBinary(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
