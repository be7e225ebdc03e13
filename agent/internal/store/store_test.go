package store

import (
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
