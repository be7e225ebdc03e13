package store

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Store is the node's blob store, the one owner of every blob file under
// its directory: <dir>/blobs/<hex> holds verified sha256 blobs (the
// index, with LRU eviction that skips blobs somebody is reading, refs > 0),
// <dir>/partial/ the downloads in progress (NewPartial) and the files
// earlier downloads left to resume from, <dir>/torrents/ the metadata to
// seed a blob again after a restart. Every byte of blobs/ and partial/
// counts against the bound: cached blobs, the reservations of downloads
// (their whole size, taken before they write) and the files kept to resume
// from; a download that finds no room waits for it (Pending.Reserve). The
// open files of the node's torrents, partial or cached, are found by
// infohash (Readers), and every reader of a blob, the mirror's included,
// reads it through a Reader.
type Store struct {
	dir string
	max int64
	log *logrus.Entry
	// readers are the open blob files of the node's torrents.
	readers    Readers
	partialSeq atomic.Uint64 // names partial files apart

	mu      sync.Mutex
	entries map[string]*entry
	lru     *list.List // front = most recently used; values are *entry
	space
	onEvict func(hex string)
	onStep  func(step string)
}

// space is the store's use against its bound (under Store.mu).
type space struct {
	// used is committed bytes + reservations + resume files; never above
	// max once the store is open.
	used int64
	// resumable are the partial files kept for the next download of their
	// blob, by hex; adopted those a download took over, by its partial
	// path, until its Pending counts them.
	resumable map[string]resumeFile
	adopted   map[string]int64
	// abandoning are the blobs whose failed download is setting its file
	// aside, each closed once it is in resumable (or gone).
	abandoning map[string]chan struct{}
	// freed is closed (and replaced) whenever room may have been given
	// back: a reservation returned, a blob unpinned or removed.
	freed chan struct{}
}

// Options are a store's limits and hooks.
type Options struct {
	// MaxBytes is the soft bound of the committed blobs and reservations.
	MaxBytes int64
	// Log is the agent's (nil: a logger of the store's own).
	Log *logrus.Entry
	// OnEvict, if set, is told of each blob eviction removed (not of
	// corrupt blobs deleted on a check).
	OnEvict func(hex string)
}

type entry struct {
	hex  string
	size int64
	refs int
	elem *list.Element
	// verified records the file's size and mtime when its sha256 was last
	// checked; a file changed behind our back (corruption, tampering) no
	// longer matches and is re-hashed before it is served again.
	verified bool
	modTime  time.Time
}

// Handle pins one cached blob against eviction until Release.
type Handle struct {
	c    *Store
	e    *entry
	once sync.Once
}

// Open opens (or creates) the store under dir. Partial files an earlier
// process left are kept to resume from (keepResumable); anything else left
// over in partial/ goes.
//
// Blobs may be private images: the store is the agent's alone (directories
// 0700, files 0600, existing ones included).
func Open(dir string, o Options) (*Store, error) {
	log := o.Log
	if log == nil {
		log = logrus.NewEntry(logrus.New())
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("cache dir: %w", err)
	}
	for _, d := range []string{"", "blobs", "partial", "torrents"} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o700); err != nil {
			return nil, fmt.Errorf("cache dir: %w", err)
		}
		if err := os.Chmod(p, 0o700); err != nil {
			return nil, fmt.Errorf("cache dir: %w", err)
		}
	}
	c := &Store{dir: dir, max: o.MaxBytes, log: log, onEvict: o.OnEvict, entries: map[string]*entry{}, lru: list.New(),
		space: space{adopted: map[string]int64{}, abandoning: map[string]chan struct{}{}, freed: make(chan struct{})}}
	var err error
	if c.resumable, err = c.keepResumable(); err != nil {
		return nil, fmt.Errorf("clean partial dir: %w", err)
	}
	// Metadata a crash left half-saved (saveMetainfo writes *.tmp, then
	// renames).
	if tmps, err := filepath.Glob(filepath.Join(dir, "torrents", "*.tmp")); err == nil {
		for _, p := range tmps {
			_ = os.Remove(p)
		}
	}
	des, err := os.ReadDir(filepath.Join(dir, "blobs"))
	if err != nil {
		return nil, fmt.Errorf("scan cache: %w", err)
	}
	var found []*entry
	for _, de := range des {
		if !validHex(de.Name()) || !de.Type().IsRegular() {
			continue
		}
		if err := os.Chmod(filepath.Join(dir, "blobs", de.Name()), 0o600); err != nil {
			continue
		}
		fi, err := de.Info()
		if err != nil {
			continue
		}
		// Not verified: the previous process may have died mid-write of the
		// filesystem, or the file may have been altered since.
		found = append(found, &entry{hex: de.Name(), size: fi.Size(), modTime: fi.ModTime()})
	}
	// Recreate LRU order from modification times (oldest at the back).
	sort.Slice(found, func(i, j int) bool { return found[i].modTime.After(found[j].modTime) })
	for _, e := range found {
		e.elem = c.lru.PushBack(e)
		c.entries[e.hex] = e
		c.used += e.size
	}
	for h, r := range c.resumable {
		c.used += r.size
		if _, ok := c.entries[h]; ok {
			c.dropResumableLocked(h) // cached after all
		}
	}
	// A smaller bound than the last run's: make it hold from the start
	// (nothing is seeded yet, so nobody is told).
	for _, h := range c.evictLocked(0) {
		c.log.WithField("digest", "sha256:"+h).Info("evicted blob from agent cache: over the bound at start")
	}
	c.log.WithFields(logrus.Fields{"dir": dir, "blobs": len(found), "usedBytes": c.used}).Info("agent cache opened")
	return c, nil
}

func (c *Store) blobPath(hex string) string    { return filepath.Join(c.dir, "blobs", hex) }
func (c *Store) partialPath(hex string) string { return filepath.Join(c.dir, "partial", hex) }

// Cached lists the cached blobs with their modification times.
func (c *Store) Cached() map[string]time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]time.Time, len(c.entries))
	for h, e := range c.entries {
		out[h] = e.modTime
	}
	return out
}

// Usage returns used and free bytes (free never negative).
func (c *Store) Usage() (used, free int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.used, max(0, c.max-c.used)
}

// Lookup pins the blob if it is cached.
func (c *Store) Lookup(hex string) (*Handle, bool) { return c.pin(hex, true) }

// Peek pins the blob if it is cached, leaving its place in the LRU order.
func (c *Store) Peek(hex string) (*Handle, bool) { return c.pin(hex, false) }

func (c *Store) pin(hex string, touch bool) (*Handle, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[hex]
	if !ok {
		return nil, false
	}
	e.refs++
	if touch {
		c.lru.MoveToFront(e.elem)
	}
	return &Handle{c: c, e: e}, true
}

// Path is the blob file.
func (h *Handle) Path() string { return h.c.blobPath(h.e.hex) }

// Verified reports whether the copy was hashed since the store opened (a
// blob found at Open counts as unverified until then).
func (h *Handle) Verified() bool {
	h.c.mu.Lock()
	defer h.c.mu.Unlock()
	return h.e.verified
}

// Hex is the blob's sha256.
func (h *Handle) Hex() string { return h.e.hex }

// Size is the blob length.
func (h *Handle) Size() int64 { return h.e.size }

// Release unpins the blob.
func (h *Handle) Release() {
	h.once.Do(func() {
		h.c.mu.Lock()
		h.e.refs--
		if h.e.refs == 0 {
			h.c.roomLocked() // evictable now
		}
		h.c.mu.Unlock()
	})
}

// Verify makes sure the file still hashes to its name. It is cheap when the
// file was verified before and its size and mtime are unchanged. A mismatch
// deletes the blob and returns an error; the caller re-fetches.
func (h *Handle) Verify() error {
	r, err := h.Open()
	if err != nil {
		return err
	}
	return r.Close()
}

// Open is Verify on a descriptor of the blob file, returned as a Reader
// for the caller to send from: what it sends is the file that was checked,
// whatever replaces the path meanwhile. The caller closes the Reader.
func (h *Handle) Open() (*Reader, error) {
	f, err := h.open()
	if err != nil {
		return nil, err
	}
	size := h.Size()
	return NewReader(f, max(size, 1), size, func(int) bool { return true }), nil
}

func (h *Handle) open() (*os.File, error) {
	c := h.c
	f, err := os.Open(h.Path())
	if err != nil {
		c.remove(h.e)
		return nil, fmt.Errorf("cached blob %s: %w", h.e.hex, err)
	}
	fail := func(err error) (*os.File, error) {
		f.Close()
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		return fail(fmt.Errorf("cached blob %s: %w", h.e.hex, err))
	}
	c.mu.Lock()
	ok := h.e.verified && fi.Size() == h.e.size && fi.ModTime().Equal(h.e.modTime)
	c.mu.Unlock()
	if ok {
		return f, nil
	}
	d := sha256.New()
	if _, err := io.Copy(d, f); err != nil {
		return fail(fmt.Errorf("hash cached blob %s: %w", h.e.hex, err))
	}
	if got := hex.EncodeToString(d.Sum(nil)); got != h.e.hex {
		h.c.log.WithFields(logrus.Fields{"digest": "sha256:" + h.e.hex, "got": "sha256:" + got}).Warn("cached blob corrupted; deleting and re-fetching")
		c.remove(h.e)
		return fail(fmt.Errorf("cached blob sha256:%s is corrupted (hashes to sha256:%s)", h.e.hex, got))
	}
	// The size and mtime from before the hash: a change while it ran
	// shows at the next check.
	c.mu.Lock()
	h.e.verified, h.e.size, h.e.modTime = true, fi.Size(), fi.ModTime()
	c.mu.Unlock()
	return f, nil
}

// remove deletes an entry regardless of refs: used for corrupt blobs, which
// nobody should keep reading. Open file descriptors stay valid.
func (c *Store) remove(e *entry) {
	c.mu.Lock()
	cur, ok := c.entries[e.hex]
	if ok && cur == e {
		delete(c.entries, e.hex)
		c.lru.Remove(e.elem)
		c.used -= e.size
		c.roomLocked()
	}
	c.mu.Unlock()
	if ok && cur == e {
		// Otherwise the path is gone or holds the blob's next copy.
		_ = os.Remove(c.blobPath(e.hex))
		_ = os.Remove(c.torrentPath(e.hex))
	}
}

// Reserve accounts n more bytes for a download, once there is room for
// them: it evicts what it can (evictLocked) and otherwise waits until room
// is given back or ctx ends. The bound holds: no reservation takes the
// store's use beyond it. waited says whether it had to wait.
func (c *Store) Reserve(ctx context.Context, n int64) (waited bool, err error) {
	if n > c.max {
		return false, fmt.Errorf("%d bytes exceed the cache's %d", n, c.max)
	}
	for {
		c.mu.Lock()
		evicted := c.evictLocked(n)
		ok := c.used+n <= c.max
		if ok {
			c.used += n
		}
		freed := c.freed
		c.mu.Unlock()
		c.afterEvict(evicted)
		if ok {
			return waited, nil
		}
		waited = true
		select {
		case <-freed:
		case <-ctx.Done():
			return true, fmt.Errorf("no room in the cache for %d bytes: everything cached is being read or downloaded: %w", n, ctx.Err())
		}
	}
}

// Unreserve returns a reservation that did not become a blob.
func (c *Store) Unreserve(n int64) {
	if n == 0 {
		return
	}
	c.mu.Lock()
	c.used -= n
	c.roomLocked()
	c.mu.Unlock()
}

// roomLocked wakes the reservations waiting for room.
func (c *Store) roomLocked() {
	close(c.freed)
	c.freed = make(chan struct{})
}

// evictLocked makes room for need more bytes: the files kept to resume
// interrupted downloads go first (oldest first; they save a download part
// of its bytes, a cached blob all of them), then cached blobs nobody is
// reading, least recently used first. It returns the evicted blobs.
func (c *Store) evictLocked(need int64) []string {
	for c.used+need > c.max && len(c.resumable) > 0 {
		oldest := ""
		for h, r := range c.resumable {
			if oldest == "" || r.at.Before(c.resumable[oldest].at) {
				oldest = h
			}
		}
		c.log.WithField("digest", "sha256:"+oldest).Info("dropped an interrupted download's file to make room")
		c.dropResumableLocked(oldest)
	}
	var evicted []string
	for el := c.lru.Back(); el != nil && c.used+need > c.max; {
		e := el.Value.(*entry)
		prev := el.Prev()
		if e.refs == 0 {
			c.lru.Remove(el)
			delete(c.entries, e.hex)
			c.used -= e.size
			_ = os.Remove(c.torrentPath(e.hex))
			if err := os.Remove(c.blobPath(e.hex)); err != nil && !os.IsNotExist(err) {
				c.log.WithError(err).WithField("digest", "sha256:"+e.hex).Warn("evict cached blob")
			}
			evicted = append(evicted, e.hex)
		}
		el = prev
	}
	return evicted
}

func (c *Store) afterEvict(evicted []string) {
	for _, h := range evicted {
		c.log.WithField("digest", "sha256:"+h).Info("evicted blob from agent cache")
		if c.onEvict != nil {
			c.onEvict(h)
		}
	}
}

// Commit moves a verified partial file (path) into the cache, turning a
// reservation of reserved bytes into a blob of size bytes, and returns it
// pinned. The blob is in the cache once its name is (clients may already
// hold every byte: it was verified before); its bytes and the name reach
// the disk before Commit returns. A crash at any point leaves no blob, or a
// blob a restarted agent hashes before it serves or seeds it (Open
// marks every blob unverified), so a torn file is never handed out.
//
// published, if set, is called once the blob is in the cache, before
// anyone can find it there (under the cache's lock: it must not call the
// cache).
func (c *Store) Commit(path, hex string, size, reserved int64, published func()) (*Handle, error) {
	fail := func(err error) (*Handle, error) {
		c.Unreserve(reserved)
		return nil, fmt.Errorf("commit blob sha256:%s: %w", hex, err)
	}
	c.step("begin")
	f, err := os.Open(path)
	if err != nil {
		return fail(err)
	}
	defer f.Close()
	if err := os.Rename(path, c.blobPath(hex)); err != nil {
		return fail(err)
	}
	c.step("renamed")
	fi, err := f.Stat()
	if err != nil {
		return fail(err)
	}
	c.mu.Lock()
	c.used -= reserved
	c.dropResumableLocked(hex) // cached now
	if old, ok := c.entries[hex]; ok {
		// Replaced (a corrupt copy was re-fetched while the old entry
		// lived, or another upstream's download of it finished first).
		c.lru.Remove(old.elem)
		c.used -= old.size
	}
	e := &entry{hex: hex, size: size, refs: 1, verified: true, modTime: fi.ModTime()}
	e.elem = c.lru.PushFront(e)
	c.entries[hex] = e
	c.used += size
	if published != nil {
		published()
	}
	evicted := c.evictLocked(0)
	c.roomLocked()
	c.mu.Unlock()
	c.afterEvict(evicted)
	h := &Handle{c: c, e: e}
	if err := f.Sync(); err != nil {
		return h, fmt.Errorf("commit blob sha256:%s: sync: %w", hex, err)
	}
	c.step("synced")
	if err := syncDir(filepath.Join(c.dir, "blobs")); err != nil {
		return h, fmt.Errorf("commit blob sha256:%s: %w", hex, err)
	}
	c.step("dirsynced")
	return h, nil
}

// SetCommitStep makes fn (tests; nil: none) be called at each step of a
// commit: "begin", then after "renamed", "synced", "dirsynced". Call it
// before the store is used.
func (c *Store) SetCommitStep(fn func(step string)) { c.onStep = fn }

func (c *Store) step(s string) {
	if c.onStep != nil {
		c.onStep(s)
	}
}

// syncDir makes a rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}
