package agent

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"testing"
	"testing/iotest"

	"github.com/shoalproject/shoal/agent/internal/partial"
)

// readPiece writes a piece as it reads it, in steps, and hashes what it
// read; a body that ends early is an error and leaves the piece missing.
func TestReadPiece(t *testing.T) {
	const pl = 2*pieceChunk + 123
	data := make([]byte, 2*pl)
	rand.Read(data)
	sum256 := sha256.Sum256(data)
	b, err := partial.Create(context.Background(), filepath.Join(t.TempDir(), "p"), hex.EncodeToString(sum256[:]))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.SetLayout(int64(len(data)), pl); err != nil {
		t.Fatal(err)
	}

	// Piece 1 from a body that ends 10 bytes early, one byte per Read.
	w, _ := b.BeginPiece(1)
	buf := make([]byte, pl)
	n, _, err := readPiece(iotest.OneByteReader(bytes.NewReader(data[pl:2*pl-10])), buf, w, true)
	if !errors.Is(err, io.ErrUnexpectedEOF) || n != pl-10 {
		t.Fatalf("short body: n=%d err=%v", n, err)
	}
	w.Abort()
	if b.Present(1) {
		t.Fatal("piece of a short body is present")
	}

	for i := range 2 {
		w, err := b.BeginPiece(i)
		if err != nil || w == nil {
			t.Fatalf("BeginPiece(%d) = %v, %v", i, w, err)
		}
		want := data[i*pl : (i+1)*pl]
		buf := make([]byte, pl)
		n, sum, err := readPiece(iotest.HalfReader(bytes.NewReader(want)), buf, w, true)
		if err != nil || n != pl || !bytes.Equal(buf, want) {
			t.Fatalf("piece %d: n=%d err=%v, same bytes %v", i, n, err, bytes.Equal(buf, want))
		}
		if s := sha1.Sum(want); !bytes.Equal(sum, s[:]) {
			t.Fatalf("piece %d: SHA-1 %x, want %x", i, sum, s)
		}
		if err := w.Commit(buf, true, func() {}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10e9)
	defer cancel()
	if err := b.Wait(ctx); err != nil {
		t.Fatal(err)
	}

	// Without a writer or a check it only reads.
	buf = make([]byte, pl)
	if n, sum, err := readPiece(bytes.NewReader(data[:pl]), buf, nil, false); err != nil || n != pl || sum != nil || !bytes.Equal(buf, data[:pl]) {
		t.Fatalf("read only: n=%d sum=%x err=%v", n, sum, err)
	}
}
