package fetch

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"net/url"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/internal/store"
)

// Limits on torrent metadata from the upstream, checked before anything is
// allocated or reserved for it: the registry's allowed piece lengths
// (README, "Piece length").
const (
	minPieceLength = 16 << 10
	maxPieceLength = 64 << 20
)

// checkInfo makes sure the torrent describes this blob, of the size the
// upstream gave before (size; -1 if it gave none), in a shape the agent
// can hold.
func checkInfo(info *metainfo.Info, hexd string, size, maxBytes int64) error {
	switch {
	case info.Name != hexd:
		return fmt.Errorf("torrent names %q, not this blob", info.Name)
	case len(info.Files) > 0:
		return errors.New("torrent has several files")
	case info.Length <= 0 || info.Length > maxBytes:
		return fmt.Errorf("torrent length %d outside (0, cache.maxBytes]", info.Length)
	case size >= 0 && info.Length != size:
		return fmt.Errorf("torrent length %d, but the upstream says the blob has %d bytes", info.Length, size)
	case info.PieceLength < minPieceLength || info.PieceLength > maxPieceLength || info.PieceLength&(info.PieceLength-1) != 0:
		return fmt.Errorf("torrent piece length %d is not a power of two in [16 KiB, 64 MiB]", info.PieceLength)
	case int64(len(info.Pieces)) != 20*((info.Length+info.PieceLength-1)/info.PieceLength):
		return errors.New("torrent piece hashes do not match its length")
	}
	return nil
}

// viaTorrent downloads through the swarm. It returns a fallback reason when
// HTTP has to finish the job; the pieces that arrived are kept.
func (d *dl) viaTorrent(ctx context.Context, mi *metainfo.MetaInfo) (string, error) {
	fe := d.fe
	info, err := mi.UnmarshalInfo()
	if err == nil {
		err = checkInfo(&info, d.req.Hex, d.f.Size, fe.cfg.MaxBytes)
	}
	if err != nil {
		d.log.WithError(err).Warn("torrent metadata does not describe this blob; using HTTP")
		return "bad_torrent", nil
	}
	if err := d.layout(ctx, &info); err != nil {
		return "", err
	}
	fe.seeds.drop(d.req.Hex)
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return "bad_torrent", nil
	}
	if fe.deps.Peers.Busy(spec.InfoHash) {
		// The same torrent downloading for another upstream's flight: one
		// swarm per torrent, so this one takes HTTP.
		return "torrent_busy", nil
	}
	// Web seeds (url-list) would load the registry from every node at
	// once; the engine fetches the registry's share itself.
	spec.Webseeds = nil
	spec.Trackers = withGroup(spec.Trackers, fe.cfg.Group)
	spec.Storage = fe.deps.Store.PartialStorage(d.blob)
	t, err := fe.deps.Peers.Add(spec)
	if err != nil {
		d.log.WithError(err).Warn("add torrent; using HTTP")
		return "torrent_add_failed", nil
	}
	keep := false
	defer func() {
		if !keep {
			t.Drop()
		}
	}()
	// Pieces are wanted (anacrolix connects only to swarms it needs data
	// from or seeds) but never requested over its wire: the engine moves
	// them over the data path.
	t.DownloadAll()
	t.DisallowDataDownload()
	res, err := d.runSwarm(ctx, t, &info)
	if err != nil {
		return "", err
	}
	if res.Reason == "" {
		keep = true
		d.torrent = t
		return "", nil
	}
	d.log.WithFields(logrus.Fields{"reason": res.Reason, "have": d.blob.Prefix()}).Info("swarm download gave up; resuming over HTTP")
	return res.Reason, nil
}

// layout gives the partial blob the torrent's pieces and their check,
// keeps the pieces an interrupted download left that pass it, and
// reserves the blob's size.
func (d *dl) layout(ctx context.Context, info *metainfo.Info) error {
	if err := d.blob.SetLayout(info.Length, info.PieceLength); err != nil {
		return err
	}
	check := func(i int, data []byte) bool {
		sum := sha1.Sum(data)
		return string(sum[:]) == string(info.Piece(i).V1Hash().Value.Bytes())
	}
	d.blob.SetVerifier(check)
	if n, err := d.blob.Recover(check); err != nil {
		return err
	} else if n > 0 {
		d.log.WithField("pieces", n).Info("continuing an interrupted download from its verified pieces")
		d.fe.deps.Metrics.Resumed(int64(n) * info.PieceLength)
	}
	d.prog.Size(info.Length)
	return d.reserve(ctx, info.Length)
}

// withGroup appends the node group to announce URLs so the tracker can
// prefer peers of the same group.
func withGroup(tiers [][]string, group string) [][]string {
	if group == "" {
		return tiers
	}
	out := make([][]string, 0, len(tiers))
	for _, tier := range tiers {
		var nt []string
		for _, u := range tier {
			pu, err := url.Parse(u)
			if err != nil {
				nt = append(nt, u)
				continue
			}
			q := pu.Query()
			q.Set("group", group)
			pu.RawQuery = q.Encode()
			nt = append(nt, pu.String())
		}
		out = append(out, nt)
	}
	return out
}

// seed keeps the committed blob seeding for the seed time, and its
// metadata for a restart: from the partial file's torrent when the swarm
// brought it, else from the committed file.
func (d *dl) seed(mi *metainfo.MetaInfo, unchecked int) {
	fe := d.fe
	if err := fe.deps.Store.SaveMetainfo(d.req.Hex, mi); err != nil {
		d.log.WithError(err).Warn("cannot keep torrent metadata; blob will not be seeded after a restart")
	}
	t := d.torrent
	if t != nil && unchecked > 0 {
		// The digest vouched for the pieces nobody checked: offer them.
		for i := range t.NumPieces() {
			t.Piece(i).UpdateCompletion()
		}
	}
	if t == nil {
		// Finished over HTTP: seed from the committed blob instead.
		var err error
		if t, err = fe.seedCached(d.req.Hex, mi); err != nil {
			d.log.WithError(err).Warn("cannot seed blob")
			return
		}
	}
	fe.seeds.keep(d.req.Hex, t, fe.cfg.SeedTime)
}

// seedCached adds a torrent that seeds a committed blob file.
func (fe *Fetcher) seedCached(hexd string, mi *metainfo.MetaInfo) (*torrent.Torrent, error) {
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return nil, err
	}
	spec.Webseeds = nil
	spec.Trackers = withGroup(spec.Trackers, fe.cfg.Group)
	spec.Storage = fe.deps.Store.CachedStorage(hexd)
	return fe.deps.Peers.Add(spec)
}

// Unseed stops seeding a blob (evicted, or its cached copy found corrupt).
func (fe *Fetcher) Unseed(hexd string) { fe.seeds.drop(hexd) }

// Seeding reports whether the blob is seeding.
func (fe *Fetcher) Seeding(hexd string) bool { return fe.seeds.seeding(hexd) }

// Cached is the store's committed blobs as reseeding reads them.
type Cached interface {
	Cached() map[string]time.Time
	LoadMetainfo(hex string) (*metainfo.MetaInfo, error)
	Peek(hex string) (*store.Handle, bool)
}

// Reseed resumes seeding, after a restart, the cached blobs still inside
// their seed time (counted from when they were cached). Run it in the
// background: each blob is hashed first (a crash or the disk may have left
// it torn; a bad one is deleted), and only then offered to other nodes.
func (fe *Fetcher) Reseed(ctx context.Context, c Cached) {
	n := 0
	for hexd, mod := range c.Cached() {
		if ctx.Err() != nil {
			return
		}
		left := fe.cfg.SeedTime - time.Since(mod)
		if left <= 0 {
			continue
		}
		mi, err := c.LoadMetainfo(hexd)
		if err != nil {
			continue // fetched over plain HTTP: no torrent to seed
		}
		h, ok := c.Peek(hexd)
		if !ok {
			continue
		}
		log := fe.deps.Log.WithField("digest", "sha256:"+hexd)
		info, err := mi.UnmarshalInfo()
		if err == nil {
			err = checkInfo(&info, hexd, h.Size(), fe.cfg.MaxBytes)
		}
		if err == nil {
			err = h.Verify()
		}
		if err != nil {
			h.Release()
			log.WithError(err).Warn("not seeding cached blob")
			continue
		}
		t, err := fe.seedCached(hexd, mi)
		h.Release()
		if err != nil {
			log.WithError(err).Warn("cannot re-seed cached blob")
			continue
		}
		fe.seeds.keep(hexd, t, left)
		n++
	}
	if n > 0 {
		fe.deps.Log.WithField("blobs", n).Info("seeding cached blobs again after restart")
	}
}
