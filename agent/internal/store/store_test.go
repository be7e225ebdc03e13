package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"strings"
	"testing"
)

// A blob being read is never evicted, even when the cache overflows.
func TestEvictionSkipsPinned(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, Options{MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	put := func(content string) string {
		sum := sha256.Sum256([]byte(content))
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(c.partialPath(h), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		c.Reserve(int64(len(content)))
		hd, err := c.Commit(c.partialPath(h), h, int64(len(content)), int64(len(content)), nil)
		if err != nil {
			t.Fatal(err)
		}
		hd.Release()
		return h
	}
	a := put(strings.Repeat("a", 60))
	pin, ok := c.Lookup(a)
	if !ok {
		t.Fatal("blob a not cached")
	}
	b := put(strings.Repeat("b", 60)) // over the limit: only b is unpinned... but it is newest
	c2 := put(strings.Repeat("c", 30))
	if _, ok := c.Lookup(a); !ok {
		t.Error("pinned blob evicted")
	}
	if _, err := os.Stat(c.blobPath(a)); err != nil {
		t.Errorf("pinned blob file gone: %v", err)
	}
	if _, ok := c.Lookup(b); ok {
		t.Error("unpinned LRU blob b should have been evicted")
	}
	if _, ok := c.Lookup(c2); !ok {
		t.Error("newest blob missing")
	}
	pin.Release()
}

// A pending blob reserves its size once, and gives it back unless it was
// committed: then the reservation is the blob.
func TestPendingReservation(t *testing.T) {
	c, err := Open(t.TempDir(), Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte(strings.Repeat("p", 100))
	sum := sha256.Sum256(content)
	hx := hex.EncodeToString(sum[:])
	used := func() int64 { u, _ := c.Usage(); return u }

	b, err := c.NewPartial(context.Background(), hx)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pending(b)
	p.Reserve(100)
	p.Reserve(100) // once
	if u := used(); u != 100 {
		t.Fatalf("used %d after reserving, want 100", u)
	}
	p.Abort()
	p.Abort()
	if u := used(); u != 0 {
		t.Fatalf("used %d after abort, want 0", u)
	}
	b.Close()

	b, err = c.NewPartial(context.Background(), hx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if err := b.SetSize(100); err != nil {
		t.Fatal(err)
	}
	if err := b.Append(0, content); err != nil {
		t.Fatal(err)
	}
	if err := b.Wait(context.Background()); err != nil {
		t.Fatal(err)
	}
	p = c.Pending(b)
	p.Reserve(100)
	published := false
	h, err := p.Commit(func() { published = true })
	if err != nil {
		t.Fatal(err)
	}
	p.Abort() // nothing left to give back
	if u := used(); u != 100 || !published {
		t.Fatalf("used %d (want 100), published %v after commit", u, published)
	}
	h.Release()
	if hd, ok := c.Lookup(hx); !ok {
		t.Fatal("committed blob not found")
	} else if err := hd.Verify(); err != nil {
		t.Fatal(err)
	} else {
		hd.Release()
	}
}
