package registry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	g "github.com/anacrolix/generics"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/peerid"
	"github.com/shoalproject/shoal/internal/peerwire"
)

// seeder is the BitTorrent client inside the registry. It serves blob bytes
// straight from the storage driver (for the filesystem driver, from the blob
// file itself), so seeding costs no second copy on disk. Seeding is bounded:
// a torrent nobody downloaded from for IdleTimeout is dropped, and the next
// torrent request brings it back.
type seeder struct {
	cl      *torrent.Client
	wire    *peerwire.Wire // cl's only listener and dialer, members only
	files   *filePool
	drv     *driver.Driver
	opts    driver.SeederOptions
	origin  func(ih metainfo.Hash) []string // announce URLs for the seeder itself
	log     *logrus.Entry
	metrics *serverMetrics
	dataDir string

	mu       sync.Mutex
	torrents map[metainfo.Hash]*seeded
	// dropped counts bytes uploaded by torrents no longer seeded, so the
	// upload counter stays monotonic across drops.
	dropped int64
}

type seeded struct {
	t          *torrent.Torrent
	dgst       digest.Digest
	added      time.Time
	lastActive time.Time
	lastBytes  int64
	blob       *blobData
}

func newSeeder(drv *driver.Driver, opts driver.SeederOptions, co driver.ClusterOptions, origin func(metainfo.Hash) []string, m *serverMetrics, log *logrus.Entry) (*seeder, error) {
	secrets, err := co.Secrets()
	if err != nil {
		return nil, fmt.Errorf("registry seeder: %w", err)
	}
	authority, err := cluster.NewAuthority(secrets...)
	if err != nil {
		return nil, fmt.Errorf("registry seeder: %w", err)
	}
	// A fresh key per process: nothing pins the seeder's.
	identity, err := authority.Issue("registry", nil)
	if err != nil {
		return nil, fmt.Errorf("registry seeder: %w", err)
	}
	dataDir, err := os.MkdirTemp("", "shoal-seeder-")
	if err != nil {
		return nil, fmt.Errorf("seeder data dir: %w", err)
	}
	public := net.ParseIP(opts.PublicAddr)
	if opts.PublicAddr != "" && public == nil {
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("seeder publicaddr %q is not an IP", opts.PublicAddr)
	}
	// LAN tuning and a closed wire: no socket of the client's own (no
	// plain TCP, no uTP — see third_party/go-utp — no DHT, no UPnP), only
	// peerwire's mutual TLS.
	cfg, wireNet := peerwire.ClientConfig(opts.Listen, public)
	cfg.PeerID = peerid.New(peerid.OriginPrefix)
	cfg.DataDir = dataDir
	cfg.EstablishedConnsPerTorrent = 200
	cfg.Slogger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if opts.RateLimit > 0 {
		cfg.UploadRateLimiter = rate.NewLimiter(rate.Limit(opts.RateLimit), int(max(opts.RateLimit, 256<<10)))
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("start seeder: %w", err)
	}
	wire, err := peerwire.Attach(cl, wireNet, opts.Listen, authority, identity)
	if err != nil {
		cl.Close()
		os.RemoveAll(dataDir)
		return nil, fmt.Errorf("start seeder: %w", err)
	}
	s := &seeder{
		cl: cl, wire: wire, drv: drv, opts: opts, origin: origin, metrics: m, dataDir: dataDir,
		log:      log,
		torrents: map[metainfo.Hash]*seeded{},
		files:    newFilePool(opts.MaxOpenFiles),
	}
	s.log.WithField("listen", wire.Addr().String()).Info("seeder listening (cluster TLS)")
	return s, nil
}

// Port is the peer-wire port the seeder listens on.
func (s *seeder) Port() int { return s.wire.Port() }

// probe connects to the peer-wire listener, for /healthz: a seeder whose
// listener is gone serves nobody. The connection closes before its TLS
// handshake, which peerwire logs at debug level only.
func (s *seeder) probe(ctx context.Context) error {
	var hosts []string
	if tcp, ok := s.wire.Addr().(*net.TCPAddr); ok && !tcp.IP.IsUnspecified() {
		hosts = []string{tcp.IP.String()}
	} else {
		// A wildcard listener: whichever loopback family it takes.
		hosts = []string{"127.0.0.1", "::1"}
	}
	var d net.Dialer
	var err error
	for _, h := range hosts {
		var c net.Conn
		if c, err = d.DialContext(ctx, "tcp", net.JoinHostPort(h, strconv.Itoa(s.Port()))); err == nil {
			return c.Close()
		}
	}
	return fmt.Errorf("peer-wire listener: %w", err)
}

// Ensure makes sure the blob is being seeded and returns its info and
// infohash. It is cheap for blobs already seeded.
func (s *seeder) Ensure(ctx context.Context, dgst digest.Digest) ([]byte, metainfo.Hash, error) {
	infoBytes, err := s.drv.Info(ctx, dgst)
	if err != nil {
		return nil, metainfo.Hash{}, err
	}
	ih := metainfo.HashBytes(infoBytes)
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	if cur, ok := s.torrents[ih]; ok {
		cur.lastActive = now
		return infoBytes, ih, nil
	}
	var info metainfo.Info
	if err := bencode.Unmarshal(infoBytes, &info); err != nil {
		return nil, metainfo.Hash{}, fmt.Errorf("metainfo of %s: %w", dgst, err)
	}
	blob := s.files.blob(info.PieceLength, func(off int64) (io.ReadCloser, error) {
		// Not the request's context: the torrent outlives it.
		return s.drv.BlobReader(context.Background(), dgst, off)
	})
	if err := blob.probe(); err != nil {
		return nil, metainfo.Hash{}, fmt.Errorf("blob %s: %w", dgst, err)
	}
	t, _ := s.cl.AddTorrentOpt(torrent.AddTorrentOpts{
		InfoHash:             ih,
		InfoBytes:            infoBytes,
		Storage:              blob,
		DisallowDataDownload: true,
	})
	if announce := s.origin(ih); len(announce) > 0 {
		t.AddTrackers([][]string{announce})
	}
	s.torrents[ih] = &seeded{t: t, dgst: dgst, added: now, lastActive: now, blob: blob}
	s.metrics.seeding.Set(float64(len(s.torrents)))
	s.log.WithFields(logrus.Fields{"digest": dgst, "infohash": ih.HexString()}).Debug("seeding")
	return infoBytes, ih, nil
}

// Forget stops seeding a deleted blob.
func (s *seeder) Forget(dgst digest.Digest) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ih, st := range s.torrents {
		if st.dgst == dgst {
			s.dropLocked(ih, st)
		}
	}
}

// uploadedBytes is what the seeder has sent to peers since it started.
func (s *seeder) uploadedBytes() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.dropped
	for _, st := range s.torrents {
		if st.blob.pieces != nil {
			st.blob.pieces.prune()
		}
		stats := st.t.Stats()
		n += stats.BytesWrittenData.Int64()
	}
	return n
}

func (s *seeder) dropLocked(ih metainfo.Hash, st *seeded) {
	stats := st.t.Stats()
	s.dropped += stats.BytesWrittenData.Int64()
	st.t.Drop()
	st.blob.Close()
	delete(s.torrents, ih)
	s.metrics.seeding.Set(float64(len(s.torrents)))
}

// run drops idle torrents and renews announce tokens until ctx ends.
func (s *seeder) run(ctx context.Context, tokenExpiry time.Duration) {
	tick := time.NewTicker(min(s.opts.IdleTimeout/4, time.Minute))
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case now := <-tick.C:
			s.sweep(now, tokenExpiry)
		}
	}
}

func (s *seeder) sweep(now time.Time, tokenExpiry time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ih, st := range s.torrents {
		if st.blob.pieces != nil {
			st.blob.pieces.prune()
		}
		stats := st.t.Stats()
		sent := stats.BytesWrittenData.Int64()
		if sent != st.lastBytes {
			st.lastBytes, st.lastActive = sent, now
		}
		switch {
		case now.Sub(st.lastActive) > s.opts.IdleTimeout:
			s.log.WithField("digest", st.dgst).Debug("dropping idle torrent")
			s.dropLocked(ih, st)
		case now.Sub(st.added) > tokenExpiry/2:
			// The announce token inside the tracker URL is about to expire;
			// re-adding the torrent gives it a fresh one.
			s.dropLocked(ih, st)
		}
	}
}

// Close stops seeding everything.
func (s *seeder) Close() {
	s.mu.Lock()
	for ih, st := range s.torrents {
		s.dropLocked(ih, st)
	}
	s.mu.Unlock()
	s.cl.Close()
	s.wire.Close()
	os.RemoveAll(s.dataDir)
}

func (b *blobData) OpenTorrent(_ context.Context, _ *metainfo.Info, _ metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{
		PieceWithHash: func(p metainfo.Piece, _ g.Option[[]byte]) storage.PieceImpl { return blobPiece{b, p} },
		Close:         func() error { return nil },
	}, nil
}

// blobPiece reports every piece complete: the blob's digest was verified
// when it was pushed, and the registry never writes into it.
type blobPiece struct {
	b *blobData
	p metainfo.Piece
}

func (p blobPiece) ReadAt(buf []byte, off int64) (int, error) {
	ra, release, err := p.b.acquire()
	if err != nil {
		return 0, err
	}
	if ra == nil {
		// No random access (object stores): one ranged read per piece,
		// shared by the chunk requests of that piece.
		return p.b.pieces.readAt(buf, p.p.Index(), p.p.Offset(), p.p.Length(), off)
	}
	defer release()
	return ra.ReadAt(buf, p.p.Offset()+off)
}

func (blobPiece) WriteAt([]byte, int64) (int, error) {
	return 0, fmt.Errorf("registry seeder storage is read-only")
}
func (blobPiece) MarkComplete() error    { return nil }
func (blobPiece) MarkNotComplete() error { return nil }
func (blobPiece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: true}
}
