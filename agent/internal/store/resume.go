package store

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/shoalproject/shoal/agent/internal/partial"
)

// NewPartial makes the partial blob of a download of hex, in a file of its
// own (two upstreams may download one digest at once). The file an earlier
// download left for hex, if any, is taken over: nothing in it is trusted
// until it is checked again (partial.Blob.Recover once the torrent gives
// the piece hashes, RecoverPrefix for a plain stream). Its bytes stay
// counted in the store's use, now as the download's (Pending). The blob's
// hasher lives until ctx ends or the blob is closed.
func (c *Store) NewPartial(ctx context.Context, hex string) (*partial.Blob, error) {
	path := filepath.Join(c.dir, "partial", fmt.Sprintf("%s.%d", hex, c.partialSeq.Add(1)))
	if from, n, ok := c.takeResumable(hex); ok {
		b, err := partial.Resume(ctx, path, hex, from)
		if err == nil {
			c.mu.Lock()
			c.adopted[path] = n
			c.mu.Unlock()
			return b, nil
		}
		c.log.WithError(err).WithField("digest", "sha256:"+hex).Warn("cannot continue an interrupted download; starting afresh")
		_ = os.Remove(from)
		_ = os.Remove(partial.StatePath(from))
		c.Unreserve(n)
	}
	return partial.Create(ctx, path, hex)
}

// abandon ends a download that failed or was stopped (err) and sets its
// partial file aside for the next download of the blob to continue from
// (NewPartial), replacing an older one: its bytes count in the store's use
// (in place of the download's held bytes, under one lock) until it is
// taken or evicted (resume files go first) or is older than resumeMaxAge
// at a start. A blob that failed its digest, or holds nothing, is removed
// instead. Readers keep their descriptors.
func (c *Store) abandon(b *partial.Blob, err error, held int64) {
	path, hex := b.Path(), b.Hex()
	// Stopping the blob tells its readers of the failure, and a client
	// retrying at once starts a new download of it: that download waits
	// in takeResumable until the file is set aside, so it continues from
	// it rather than from zero.
	set := make(chan struct{})
	c.mu.Lock()
	c.abandoning[hex] = set
	c.mu.Unlock()
	b.Stop(err) // the hasher's last checkpoint is written before we move it
	n := diskBytes(path)
	var evicted []string
	c.mu.Lock()
	defer func() {
		if c.abandoning[hex] == set {
			delete(c.abandoning, hex)
		}
		close(set)
		c.roomLocked()
		c.mu.Unlock()
		c.afterEvict(evicted)
	}()
	c.used -= held
	if errors.Is(err, partial.ErrDigest) || n == 0 {
		_ = os.Remove(path)
		_ = os.Remove(partial.StatePath(path))
		return
	}
	to := c.resumePath(hex)
	if err := os.Rename(path, to); err != nil {
		c.log.WithError(err).WithField("digest", "sha256:"+hex).Warn("cannot keep an interrupted download's file")
		_ = os.Remove(path)
		_ = os.Remove(partial.StatePath(path))
		return
	}
	if err := os.Rename(partial.StatePath(path), partial.StatePath(to)); err != nil {
		_ = os.Remove(partial.StatePath(to)) // an older file's checkpoint
	}
	if old, ok := c.resumable[hex]; ok {
		c.used -= old.size
	}
	c.resumable[hex] = resumeFile{size: n, at: time.Now()}
	c.used += n
	if c.used > c.max {
		// Only if held was less than the file (no reservation yet): make
		// room as a reservation would, this file last.
		evicted = c.evictLocked(0)
	}
}

// resumeMaxAge is how long a download's partial file left by an earlier
// process is kept for a download of the same blob to continue from.
const resumeMaxAge = 24 * time.Hour

// resumeFile is a partial file kept for the next download of its blob.
type resumeFile struct {
	size int64 // bytes on disk, counted in Store.used
	at   time.Time
}

// keepResumable tidies partial/ at start: of the partial files an earlier
// process left (killed or stopped mid-download), the newest per blob is
// kept as <hex>.resume with its sha256 checkpoint, for the next download
// of that blob to continue from (partial.Resume); everything else, and
// those older than resumeMaxAge, goes. It returns the kept files.
func (c *Store) keepResumable() (map[string]resumeFile, error) {
	dir := filepath.Join(c.dir, "partial")
	des, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	type kept struct {
		name string
		mod  time.Time
	}
	newest := map[string]kept{}
	for _, de := range des {
		h, rest, _ := strings.Cut(de.Name(), ".")
		fi, err := de.Info()
		if err != nil || !de.Type().IsRegular() || !validHex(h) || rest == "" || strings.Contains(rest, ".") || time.Since(fi.ModTime()) > resumeMaxAge {
			continue // a checkpoint, a temporary file, or junk
		}
		if k, ok := newest[h]; !ok || fi.ModTime().After(k.mod) {
			newest[h] = kept{de.Name(), fi.ModTime()}
		}
	}
	keep := map[string]bool{}
	for _, k := range newest {
		keep[k.name], keep[partial.StatePath(k.name)] = true, true
	}
	for _, de := range des {
		if !keep[de.Name()] {
			if err := os.RemoveAll(filepath.Join(dir, de.Name())); err != nil {
				return nil, err
			}
		}
	}
	out := map[string]resumeFile{}
	for h, k := range newest {
		from, to := filepath.Join(dir, k.name), c.resumePath(h)
		if from != to {
			if err := os.Rename(from, to); err != nil {
				return nil, err
			}
			if err := os.Rename(partial.StatePath(from), partial.StatePath(to)); err != nil && !errors.Is(err, os.ErrNotExist) {
				return nil, err
			}
		}
		out[h] = resumeFile{size: diskBytes(to), at: k.mod}
	}
	return out, nil
}

// resumePath is where a blob's partial file from an earlier download waits.
func (c *Store) resumePath(hex string) string {
	return filepath.Join(c.dir, "partial", hex+".resume")
}

// takeResumable hands the partial file an earlier download left for hex,
// if any, to a new download, with the bytes it counts for.
func (c *Store) takeResumable(hex string) (string, int64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for set, ok := c.abandoning[hex]; ok; set, ok = c.abandoning[hex] {
		c.mu.Unlock()
		<-set
		c.mu.Lock()
	}
	r, ok := c.resumable[hex]
	if !ok {
		return "", 0, false
	}
	delete(c.resumable, hex)
	return c.resumePath(hex), r.size, true
}

// dropResumableLocked removes hex's resume file (evicted, or the blob is
// cached after all).
func (c *Store) dropResumableLocked(hex string) {
	r, ok := c.resumable[hex]
	if !ok {
		return
	}
	delete(c.resumable, hex)
	c.used -= r.size
	p := c.resumePath(hex)
	_ = os.Remove(p)
	_ = os.Remove(partial.StatePath(p))
}

// diskBytes is what a file takes on disk: its allocated blocks (a partial
// file of pieces has holes), at most its length.
func diskBytes(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fileBytes(fi)
}

func validHex(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, r := range s {
		if (r < '0' || r > '9') && (r < 'a' || r > 'f') {
			return false
		}
	}
	return true
}

func fileBytes(fi os.FileInfo) int64 {
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		return min(fi.Size(), st.Blocks*512)
	}
	return fi.Size()
}
