package store

import (
	"os"
	"path/filepath"

	"github.com/anacrolix/torrent/metainfo"
)

// torrentPath holds the blob's torrent metadata, kept so a restarted agent
// can seed it again.
func (c *Store) torrentPath(hex string) string { return filepath.Join(c.dir, "torrents", hex) }

// HasMetainfo reports whether hex's torrent metadata is kept.
func (c *Store) HasMetainfo(hex string) bool {
	_, err := os.Stat(c.torrentPath(hex))
	return err == nil
}

// LoadMetainfo reads the torrent metadata kept for hex.
func (c *Store) LoadMetainfo(hex string) (*metainfo.MetaInfo, error) {
	return metainfo.LoadFromFile(c.torrentPath(hex))
}

// SaveMetainfo keeps the torrent metadata of a cached blob, replacing the
// file atomically: a crash leaves the old file or the new one, never a
// torn one (a *.tmp left over is removed at start). It goes with the blob
// when the blob is evicted or found corrupt.
func (c *Store) SaveMetainfo(hex string, mi *metainfo.MetaInfo) error {
	return saveMetainfo(c.torrentPath(hex), mi)
}

func saveMetainfo(path string, mi *metainfo.MetaInfo) error {
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	err = mi.Write(f)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return syncDir(filepath.Dir(path))
}
