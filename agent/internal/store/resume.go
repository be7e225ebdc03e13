package store

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoalproject/shoal/agent/internal/partial"
)

// NewPartial makes the partial blob of a download of hex, in a file of its
// own (two upstreams may download one digest at once). The file an earlier
// process left for hex, if any, is taken over: its pieces are checked once
// the torrent gives their hashes (partial.Blob.Recover). The blob's hasher
// lives until ctx ends or the blob is closed.
func (c *Store) NewPartial(ctx context.Context, hex string) (*partial.Blob, error) {
	path := filepath.Join(c.dir, "partial", fmt.Sprintf("%s.%d", hex, c.partialSeq.Add(1)))
	if from, ok := c.takeResumable(hex); ok {
		// A second taker's rename fails: it starts afresh.
		if b, err := partial.Resume(ctx, path, hex, from); err == nil {
			return b, nil
		}
	}
	return partial.Create(ctx, path, hex)
}

// resumeMaxAge is how long a download's partial file left by an earlier
// process is kept for a download of the same blob to continue from.
const resumeMaxAge = 24 * time.Hour

// keepResumable tidies partial/ at start: the partial files an earlier
// process left (killed mid-download) are kept as <hex>.resume, the newest
// per blob, for the next download of that blob to continue from its
// verified pieces (partial.Resume); everything else, and those older than
// resumeMaxAge, goes.
func (c *Store) keepResumable() error {
	dir := filepath.Join(c.dir, "partial")
	des, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	newest := map[string]time.Time{}
	for _, de := range des {
		p := filepath.Join(dir, de.Name())
		h, rest, _ := strings.Cut(de.Name(), ".")
		fi, err := de.Info()
		if err != nil || !de.Type().IsRegular() || !validHex(h) || rest == "" || time.Since(fi.ModTime()) > resumeMaxAge {
			if err := os.RemoveAll(p); err != nil {
				return err
			}
			continue
		}
		if t, ok := newest[h]; ok && !fi.ModTime().After(t) {
			if err := os.Remove(p); err != nil {
				return err
			}
			continue
		}
		if rest != "resume" {
			if err := os.Rename(p, c.resumePath(h)); err != nil {
				return err
			}
		}
		newest[h] = fi.ModTime()
	}
	return nil
}

// resumePath is where a blob's partial file from an earlier process waits.
func (c *Store) resumePath(hex string) string {
	return filepath.Join(c.dir, "partial", hex+".resume")
}

// takeResumable returns the partial file an earlier process left for hex,
// if any (the caller moves it away; a second taker's rename fails).
func (c *Store) takeResumable(hex string) (string, bool) {
	p := c.resumePath(hex)
	if _, err := os.Stat(p); err != nil {
		return "", false
	}
	return p, true
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
