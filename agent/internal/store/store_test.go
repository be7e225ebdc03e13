package store

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"strings"
	"testing"
	"time"
)

// A blob being read is never evicted, and the bound holds all the same: a
// reservation that only evicting it could fit waits until it is released.
func TestEvictionSkipsPinned(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, Options{MaxBytes: 100})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	put := func(content string) string {
		sum := sha256.Sum256([]byte(content))
		h := hex.EncodeToString(sum[:])
		if err := os.WriteFile(c.partialPath(h), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := c.Reserve(ctx, int64(len(content))); err != nil {
			t.Fatal(err)
		}
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
	b := put(strings.Repeat("b", 30))
	// 60 more bytes fit only without a, which is pinned: b goes, and the
	// rest waits for a's release.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	waited, err := c.Reserve(short, 60)
	cancel()
	if err == nil || !waited {
		t.Fatalf("Reserve past a pinned blob: waited %v, err %v; want a wait that ends with ctx", waited, err)
	}
	cached := func(h string) bool {
		hd, ok := c.Lookup(h)
		if ok {
			hd.Release()
		}
		return ok
	}
	if !cached(a) {
		t.Error("pinned blob evicted")
	}
	if _, err := os.Stat(c.blobPath(a)); err != nil {
		t.Errorf("pinned blob file gone: %v", err)
	}
	if cached(b) {
		t.Error("unpinned LRU blob b should have been evicted")
	}
	if used, _ := c.Usage(); used != 60 {
		t.Errorf("used %d after a refused reservation, want 60", used)
	}
	done := make(chan error, 1)
	go func() { _, err := c.Reserve(ctx, 60); done <- err }()
	pin.Release()
	pin.Release() // a second release changes nothing
	if err := <-done; err != nil {
		t.Fatalf("Reserve after the release: %v", err)
	}
	if used, _ := c.Usage(); used != 60 {
		t.Errorf("used %d, want 60 (a evicted, 60 reserved)", used)
	}
	if cached(a) {
		t.Error("released blob a still cached")
	}
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
	p.Reserve(context.Background(), 100)
	p.Reserve(context.Background(), 100) // once
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
	p.Reserve(context.Background(), 100)
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

// A download that ends without its blob leaves its file and checkpoint to
// the next download of the blob, counted in the store's use until taken
// over (then as that download's) and evicted before any cached blob; a
// restarted store finds them again.
func TestResumeFilesCount(t *testing.T) {
	dir := t.TempDir()
	c, err := Open(dir, Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	used := func() int64 { u, _ := c.Usage(); return u }
	content := []byte(strings.Repeat("r", 200<<10))
	sum := sha256.Sum256(content)
	hx := hex.EncodeToString(sum[:])

	b, err := c.NewPartial(ctx, hx)
	if err != nil {
		t.Fatal(err)
	}
	p := c.Pending(b)
	if _, err := p.Reserve(ctx, int64(len(content))); err != nil {
		t.Fatal(err)
	}
	b.SetSize(int64(len(content)))
	if err := b.Append(0, content[:100<<10]); err != nil {
		t.Fatal(err)
	}
	p.Abandon(errors.New("upstream gone"))
	b.Close()
	kept := used()
	if kept <= 0 || kept > 100<<10 {
		t.Fatalf("used %d after abandoning 100 KiB, want those bytes", kept)
	}
	if _, err := os.Stat(c.resumePath(hx)); err != nil {
		t.Fatalf("no resume file: %v", err)
	}

	// A restart finds it, counted the same.
	c, err = Open(dir, Options{MaxBytes: 1 << 20})
	if err != nil {
		t.Fatal(err)
	}
	if u := used(); u != kept {
		t.Fatalf("used %d after a restart, want the resume file's %d", u, kept)
	}
	b, err = c.NewPartial(ctx, hx)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	p = c.Pending(b)
	if u := used(); u != kept {
		t.Fatalf("used %d once taken over, want %d", u, kept)
	}
	if _, err := p.Reserve(ctx, int64(len(content))); err != nil {
		t.Fatal(err)
	}
	if u := used(); u != int64(len(content)) {
		t.Fatalf("used %d after reserving the whole blob over its resume file, want %d", u, len(content))
	}
	p.Abort()
	if u := used(); u != 0 {
		t.Fatalf("used %d after abort, want 0", u)
	}

	// Resume files go before cached blobs.
	other := []byte(strings.Repeat("o", 100<<10))
	osum := sha256.Sum256(other)
	ohx := hex.EncodeToString(osum[:])
	ob, _ := c.NewPartial(ctx, ohx)
	op := c.Pending(ob)
	op.Reserve(ctx, int64(len(other)))
	ob.SetSize(int64(len(other)))
	ob.Append(0, other[:50<<10])
	op.Abandon(errors.New("stopped"))
	ob.Close()
	if _, err := c.Reserve(ctx, 1<<20-10<<10); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(c.resumePath(ohx)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("resume file kept while the store needed its room: %v", err)
	}
	if u := used(); u != 1<<20-10<<10 {
		t.Errorf("used %d, want only the reservation", u)
	}
}
