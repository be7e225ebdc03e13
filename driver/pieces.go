package driver

import (
	"crypto/sha1"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"

	"github.com/opencontainers/go-digest"
)

// pieceHasher computes BitTorrent v1 piece hashes (SHA-1 per piece) of a
// byte stream as it is written, so a pushed blob is ready to seed the moment
// its upload commits. Its state marshals to bytes, which is what lets hashing
// continue across the separate PATCH requests of a chunked upload and across
// registry restarts.
//
// An upload's hasher also keeps the sha256 of everything it hashed (stream).
// The bytes distribution commits are not necessarily the bytes this hasher
// saw — two concurrent PATCHes to one upload each hash their own chunk while
// the file ends up with a mix — so at commit the stream's sha256 is compared
// with the blob's digest, which distribution has checked against the
// committed bytes: equal means the piece hashes describe the blob.
type pieceHasher struct {
	pieceLength int64
	offset      int64  // bytes hashed so far
	pieces      []byte // SHA-1 of every completed piece
	cur         hash.Hash
	curLen      int64     // bytes of the current, incomplete piece
	stream      hash.Hash // sha256 of all bytes hashed; nil when not needed
}

func newPieceHasher(pieceLength int64) *pieceHasher {
	return &pieceHasher{pieceLength: pieceLength, cur: sha1.New()}
}

// newUploadHasher is a pieceHasher that can prove at commit which bytes it
// hashed.
func newUploadHasher(pieceLength int64) *pieceHasher {
	h := newPieceHasher(pieceLength)
	h.stream = sha256.New()
	return h
}

// describes reports whether the hasher saw exactly the blob dgst of size
// bytes. Only sha256 blobs can be proven; others are hashed from storage.
func (h *pieceHasher) describes(dgst digest.Digest, size int64) bool {
	if h.stream == nil || h.offset != size || dgst.Algorithm() != digest.SHA256 {
		return false
	}
	return hex.EncodeToString(h.stream.Sum(nil)) == dgst.Encoded()
}

func (h *pieceHasher) Write(p []byte) (int, error) {
	if h.stream != nil {
		h.stream.Write(p)
	}
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

// pieceStateVersion 2 added the stream's sha256; a version 1 state is
// refused, so its upload is hashed again from storage (catch-up) instead.
const pieceStateVersion = 2

// maxHashState bounds the marshalled SHA-1 and SHA-256 states (about 100
// bytes each in Go's encoding).
const maxHashState = 1 << 10

// MarshalBinary encodes the state: version, piece length, offset, current
// piece length, completed hashes, the SHA-1 state of the current piece
// (length-prefixed), then the SHA-256 state of the stream.
func (h *pieceHasher) MarshalBinary() ([]byte, error) {
	if h.stream == nil {
		return nil, errors.New("marshal piece state: hasher keeps no stream digest")
	}
	inner, err := h.cur.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal sha1 state: %w", err)
	}
	stream, err := h.stream.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("marshal sha256 state: %w", err)
	}
	b := make([]byte, 0, 1+5*binary.MaxVarintLen64+len(h.pieces)+len(inner)+len(stream))
	b = append(b, pieceStateVersion)
	b = binary.AppendUvarint(b, uint64(h.pieceLength))
	b = binary.AppendUvarint(b, uint64(h.offset))
	b = binary.AppendUvarint(b, uint64(h.curLen))
	b = binary.AppendUvarint(b, uint64(len(h.pieces)))
	b = append(b, h.pieces...)
	b = binary.AppendUvarint(b, uint64(len(inner)))
	b = append(b, inner...)
	return append(b, stream...), nil
}

var errBadPieceState = errors.New("invalid piece hash state")

// UnmarshalBinary reads a state saved by MarshalBinary. The state lives in
// the registry's storage, which an operator or a shared bucket may hand us
// damaged, so every length is checked before it is used.
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
	if vals[0] > 1<<40 || vals[1] > 1<<62 || vals[2] > 1<<40 {
		return errBadPieceState
	}
	pl, off, curLen, np := int64(vals[0]), int64(vals[1]), int64(vals[2]), vals[3]
	if pl <= 0 || curLen >= pl || np%sha1.Size != 0 || uint64(len(b)) < np ||
		off != int64(np/sha1.Size)*pl+curLen {
		return errBadPieceState
	}
	pieces := b[:np]
	b = b[np:]
	ni, n := binary.Uvarint(b)
	if n <= 0 || ni > maxHashState || uint64(len(b)-n) < ni {
		return errBadPieceState
	}
	b = b[n:]
	cur := sha1.New()
	if err := cur.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[:ni]); err != nil {
		return fmt.Errorf("%w: %v", errBadPieceState, err)
	}
	stream := sha256.New()
	if len(b[ni:]) > maxHashState {
		return errBadPieceState
	}
	if err := stream.(encoding.BinaryUnmarshaler).UnmarshalBinary(b[ni:]); err != nil {
		return fmt.Errorf("%w: %v", errBadPieceState, err)
	}
	*h = pieceHasher{pieceLength: pl, offset: off, curLen: curLen, pieces: append([]byte(nil), pieces...), cur: cur, stream: stream}
	return nil
}
