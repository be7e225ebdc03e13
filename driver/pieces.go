package driver

import (
	"crypto/sha1"
	"encoding"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
)

// pieceHasher computes BitTorrent v1 piece hashes (SHA-1 per piece) of a
// byte stream as it is written, so a pushed blob is ready to seed the moment
// its upload commits. Its state marshals to bytes, which is what lets hashing
// continue across the separate PATCH requests of a chunked upload and across
// registry restarts.
type pieceHasher struct {
	pieceLength int64
	offset      int64  // bytes hashed so far
	pieces      []byte // SHA-1 of every completed piece
	cur         hash.Hash
	curLen      int64 // bytes of the current, incomplete piece
}

func newPieceHasher(pieceLength int64) *pieceHasher {
	return &pieceHasher{pieceLength: pieceLength, cur: sha1.New()}
}

func (h *pieceHasher) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		take := min(int64(len(p)), h.pieceLength-h.curLen)
		h.cur.Write(p[:take])
		h.curLen += take
		h.offset += take
		p = p[take:]
		if h.curLen == h.pieceLength {
			h.pieces = h.cur.Sum(h.pieces)
			h.cur.Reset()
			h.curLen = 0
		}
	}
	return n, nil
}

// sum returns the piece hashes of everything written, the last, short piece
// included. It does not change the state.
func (h *pieceHasher) sum() []byte {
	out := append([]byte(nil), h.pieces...)
	if h.curLen > 0 {
		out = h.cur.Sum(out)
	}
	return out
}

const pieceStateVersion = 1

// MarshalBinary encodes the state: version, piece length, offset, current
// piece length, completed hashes, then the SHA-1 state of the current piece.
func (h *pieceHasher) MarshalBinary() ([]byte, error) {
	inner, err := h.cur.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal sha1 state: %w", err)
	}
	b := make([]byte, 0, 1+4*binary.MaxVarintLen64+len(h.pieces)+len(inner))
	b = append(b, pieceStateVersion)
	b = binary.AppendUvarint(b, uint64(h.pieceLength))
	b = binary.AppendUvarint(b, uint64(h.offset))
	b = binary.AppendUvarint(b, uint64(h.curLen))
	b = binary.AppendUvarint(b, uint64(len(h.pieces)))
	b = append(b, h.pieces...)
	return append(b, inner...), nil
}

var errBadPieceState = errors.New("invalid piece hash state")

func (h *pieceHasher) UnmarshalBinary(b []byte) error {
	if len(b) < 1 || b[0] != pieceStateVersion {
		return errBadPieceState
	}
	b = b[1:]
	var vals [4]uint64
	for i := range vals {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return errBadPieceState
		}
		vals[i], b = v, b[n:]
	}
	pl, off, curLen, np := int64(vals[0]), int64(vals[1]), int64(vals[2]), vals[3]
	if pl <= 0 || curLen >= pl || np%sha1.Size != 0 || uint64(len(b)) < np ||
		off != int64(np/sha1.Size)*pl+curLen {
		return errBadPieceState
	}
	cur := sha1.New()
	if err := cur.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[np:]); err != nil {
		return fmt.Errorf("%w: %v", errBadPieceState, err)
	}
	*h = pieceHasher{pieceLength: pl, offset: off, curLen: curLen, pieces: append([]byte(nil), b[:np]...), cur: cur}
	return nil
}
