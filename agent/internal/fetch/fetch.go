// Package fetch is the agent's download pipeline: one flight per blob and
// upstream however many requesters want it (origin.Flights), the torrent
// metadata from the upstream (remembered a while), the blob through the
// swarm engine (agent/swarm) or plain HTTP into the store's partial blob,
// its commit to the store once its digest matched, and its seeding
// afterwards. It sees the store, the upstream, the peer wire and the
// metrics through the narrow interfaces below.
package fetch

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"
	"golang.org/x/time/rate"

	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/agent/internal/partial"
	"github.com/shoalproject/shoal/agent/internal/peer"
	"github.com/shoalproject/shoal/agent/internal/store"
	"github.com/shoalproject/shoal/agent/swarm"
)

// Request is one blob download: where from and with whose credentials. The
// credentials are used for this download only and never logged or stored.
type Request struct {
	Base string // upstream registry base URL; must be a configured upstream
	Repo string
	Hex  string // sha256 hex
	Auth string // Authorization header value, may be empty
	// Size is what the caller knows of the blob's size (the control API's
	// request, from a manifest), 0 if nothing.
	Size int64
}

// Config is what a Fetcher takes from the agent's configuration.
type Config struct {
	// Upstreams are the configured upstream registries' URLs: the only
	// ones a download may name.
	Upstreams []string
	MaxBytes  int64 // cache.maxBytes: no blob is larger
	// StallTimeout and Deadline bound the swarm engine (p2p.stallTimeout,
	// p2p.deadline); DownloadBytesPerSec is p2p.downloadBytesPerSec (0:
	// unlimited).
	StallTimeout, Deadline time.Duration
	DownloadBytesPerSec    int64
	SeedTime               time.Duration
	// Group is the node's first group, told to the tracker ("" none).
	Group string
	// RoomWait bounds how long a download waits for room in the cache
	// (store.Pending.Reserve) before it fails (0: DefaultRoomWait).
	RoomWait time.Duration
}

// DefaultRoomWait is how long a download waits for room in the cache by
// default: as long as p2p.deadline's default, the time a big blob may take
// to come in; room comes back as other downloads finish and their readers
// go.
const DefaultRoomWait = 10 * time.Minute

// Store is where downloads go: partial blobs, their way into the store
// (reservation and commit), what anacrolix reads them through, and the
// metadata kept for seeding (store.Store).
type Store interface {
	Lookup(hex string) (*store.Handle, bool)
	NewPartial(ctx context.Context, hex string) (*partial.Blob, error)
	Pending(b *partial.Blob) *store.Pending
	SaveMetainfo(hex string, mi *metainfo.MetaInfo) error
	PartialStorage(b *partial.Blob) store.Storage
	CachedStorage(hex string) store.Storage
}

// Origin is the upstream as downloads use it (origin.Client).
type Origin interface {
	CheckAccess(ctx context.Context, base, repo, hexd, auth string) (int64, error)
	AskTorrent(ctx context.Context, base string, cred origin.Cred, hexd string) (*metainfo.MetaInfo, *http.Response, string, error)
	GetBlob(ctx context.Context, base string, cred origin.Cred, hexd string, off int64) (*http.Response, error)
	Range(f *origin.Flight, length int64, dataURL string, log *logrus.Entry) *origin.Range
}

// Peers is the BitTorrent client (peer.Client).
type Peers interface {
	Busy(ih metainfo.Hash) bool
	Add(spec *torrent.TorrentSpec) (*torrent.Torrent, error)
	Join(t *torrent.Torrent, length int64, pieces int) (*peer.Swarm, func())
}

// Metrics is what downloads count.
type Metrics interface {
	// Download is called as a download starts; its Progress lives until
	// Done.
	Download(hex string) Progress
	Mismatch()
	Resumed(bytes int64)
	// Fetched counts a verified blob's bytes by source.
	Fetched(fromPeers, fromRegistry int64)
	// Lookup counts a requester's blob found in the cache (hit) or not.
	Lookup(hit bool)
	// RoomWait counts a download that had to wait for room in the cache:
	// admitted, or failed for want of it.
	RoomWait(admitted bool)
}

// Progress is one download's live counts.
type Progress interface {
	swarm.Metrics
	Size(n int64)
	HTTPBytes(n int64)
	// Done ends the download: source is "p2p" or "http" when it was
	// committed, "" when it failed.
	Done(source string)
}

// Deps are a Fetcher's parts.
type Deps struct {
	Store   Store
	Origin  Origin
	Peers   Peers // nil: P2P disabled
	Metrics Metrics
	Log     *logrus.Entry
}

// Fetcher runs the agent's downloads.
type Fetcher struct {
	cfg  Config
	deps Deps
	// life bounds every download: downloads outlive requests, not the
	// agent.
	life     context.Context
	flights  *origin.Flights
	httpRate *rate.Limiter // nil = unlimited
	// strict holds the blobs (sha256 hex) that failed their digest after
	// unchecked pieces from nodes: their next downloads check every piece.
	strict sync.Map
	meta   *metaMemo
	seeds  *seeder
}

// New makes a Fetcher whose downloads live until life ends.
func New(life context.Context, cfg Config, deps Deps) *Fetcher {
	f := &Fetcher{cfg: cfg, deps: deps, life: life, flights: origin.NewFlights(),
		meta: newMetaMemo(10*time.Minute, 16<<20), seeds: newSeeder()}
	if f.cfg.RoomWait <= 0 {
		f.cfg.RoomWait = DefaultRoomWait
	}
	if cfg.DownloadBytesPerSec > 0 {
		f.httpRate = rate.NewLimiter(rate.Limit(cfg.DownloadBytesPerSec), 1<<20)
	}
	return f
}

// Requesters counts the requesters attached to the download of hex from
// base (0: none).
func (fe *Fetcher) Requesters(base, hex string) int {
	return fe.flights.Requesters(origin.Key{Base: base, Hex: hex})
}

func (fe *Fetcher) run(f *origin.Flight, req Request) {
	log := fe.deps.Log.WithField("digest", "sha256:"+req.Hex)
	start := time.Now()
	d := &dl{fe: fe, f: f, blob: f.Blob, req: req, log: log, pending: fe.deps.Store.Pending(f.Blob), prog: fe.deps.Metrics.Download(req.Hex)}
	d.prog.Size(f.Size)
	err := d.download(fe.life)
	o := f.Outcome() // set by a commit, before the flight ends
	if err != nil {
		o.Source = ""
	}
	d.prog.Done(o.Source)
	f.End(err)
	if err != nil {
		var ue *origin.UpstreamError
		if !errors.As(err, &ue) {
			log.WithError(err).Warn("blob download failed")
		}
		return
	}
	log.WithFields(logrus.Fields{"size": f.Blob.Size(), "source": o.Source, "fromPeers": o.FromPeers,
		"fromRegistry": o.FromRegistry, "elapsed": time.Since(start).Round(time.Millisecond)}).Info("blob cached")
}

// dl is the state of one download attempt.
type dl struct {
	fe   *Fetcher
	f    *origin.Flight
	blob *partial.Blob
	req  Request
	log  *logrus.Entry
	// pending is the blob's way into the store: reservation and commit.
	pending *store.Pending
	torrent *torrent.Torrent // still seeding from the partial file, if any

	fromPeers, fromRegistry atomic.Int64
	// prog is the live view of this download.
	prog Progress
	// dataURL is the registry's signed piece endpoint for this blob, if it
	// offered one: Range requests there cost it a sendfile instead of a
	// trip through distribution.
	dataURL string
}

// download fills the partial blob, verifies it and commits it to the
// store: the torrent's way when the upstream has one, plain HTTP for what
// is left. The blob's room in the store is taken first when its size is
// known. A download that fails or is stopped (the agent shutting down)
// leaves its file for the next download of the blob to continue from
// (store.Pending.Abandon), unless it failed its digest.
func (d *dl) download(ctx context.Context) (err error) {
	defer d.pending.Abort() // the reservation, if neither committed nor abandoned
	defer func() {
		if err != nil {
			// Out of the set before readers hear of the failure (Abandon
			// stops the blob with err): a requester told of it must
			// start afresh, not join this flight and be handed its error.
			d.f.Retire()
			d.pending.Abandon(err)
		}
	}()
	if d.f.Size > 0 {
		if err := d.reserve(ctx, d.f.Size); err != nil {
			return err
		}
	}
	mi, plain, reason, err := d.metainfo(ctx)
	if err != nil {
		return err
	}
	if mi != nil {
		reason, err = d.viaTorrent(ctx, mi)
		if err != nil {
			return err
		}
		if reason == "bad_torrent" {
			d.fe.meta.forget(origin.Key{Base: d.req.Base, Hex: d.req.Hex})
			mi = nil // neither kept nor seeded
		}
	}
	if !d.blob.Complete() {
		d.prog.Fallback(reason)
		if err := d.viaHTTP(ctx, plain); err != nil {
			return err
		}
	} else if plain != nil {
		plain.Body.Close()
	}
	return d.finish(ctx, mi)
}

// metainfo asks the upstream for the blob's torrent (or remembers it),
// with each attached requester's credentials in turn while the upstream
// refuses them. Without a torrent it says why (the fallback's reason);
// plain is the blob's body when the upstream answered with it instead.
func (d *dl) metainfo(ctx context.Context) (mi *metainfo.MetaInfo, plain *http.Response, reason string, err error) {
	if d.fe.deps.Peers == nil {
		return nil, nil, "p2p_disabled", nil
	}
	key := origin.Key{Base: d.req.Base, Hex: d.req.Hex}
	var memo bool
	if mi, d.dataURL, memo = d.fe.meta.get(key, time.Now()); !memo {
		for attempt := 0; ; attempt++ {
			c := d.f.Credential()
			mi, plain, d.dataURL, err = d.fe.deps.Origin.AskTorrent(ctx, d.req.Base, c, d.req.Hex)
			if origin.IsRefusal(err) && d.f.SwitchCred(c, true) {
				continue
			}
			if !retryTorrent(err) || attempt+1 >= torrentAttempts {
				break
			}
			// A registry that fails to answer is most likely overloaded
			// (a rollout's first seconds), and the plain-HTTP fallback
			// asks it for the whole blob: the heaviest request there is,
			// from every node at once (issue 20: at N = 128 on 10 Mbit/s
			// links every node fell back and the rollout collapsed).
			wait := torrentRetryWait << attempt
			wait += time.Duration(rand.Int64N(int64(wait)))
			d.log.WithError(err).WithField("retryIn", wait.Round(time.Millisecond)).Info("torrent request failed; asking again")
			select {
			case <-ctx.Done():
				return nil, nil, "", ctx.Err()
			case <-time.After(wait):
			}
		}
		if err == nil && mi != nil {
			d.fe.meta.put(key, mi, d.dataURL, time.Now())
		}
	}
	var ue *origin.UpstreamError
	switch {
	case errors.As(err, &ue):
		return nil, nil, "", err
	case err != nil:
		d.log.WithError(err).Warn("torrent request failed; using HTTP")
		return nil, plain, "torrent_request_failed", nil
	case mi == nil:
		return nil, plain, "no_torrent", nil
	}
	return mi, plain, "", nil
}

// torrentAttempts bound how often a download asks for a blob's torrent
// when the upstream fails to answer, torrentRetryWait the wait before the
// second ask (doubling, plus up to as much again at random so that nodes
// that failed together do not ask together again): ~1.5, 3, 6 s.
const (
	torrentAttempts  = 4
	torrentRetryWait = time.Second
)

// retryTorrent reports whether a failed torrent request is worth
// repeating: the upstream did not answer (network, timeout), not that it
// answered no (UpstreamError: relayed to the client) or sent metadata
// that does not parse (it would again).
func retryTorrent(err error) bool {
	var ue *origin.UpstreamError
	return err != nil && !errors.As(err, &ue) && !errors.Is(err, origin.ErrBadTorrent) && !errors.Is(err, context.Canceled)
}

// finish waits for the blob's sha256 and commits it to the store; the
// torrent (if any) keeps seeding for the configured time.
func (d *dl) finish(ctx context.Context, mi *metainfo.MetaInfo) error {
	fe, f := d.fe, d.f
	unchecked := d.blob.Unchecked()
	if err := d.blob.Wait(ctx); err != nil {
		if errors.Is(err, partial.ErrDigest) {
			fe.deps.Metrics.Mismatch()
			if unchecked > 0 {
				// Pieces taken from nodes without their SHA-1 check: the
				// next attempt checks every piece and drops the node that
				// sent bad ones.
				fe.strict.Store(d.req.Hex, true)
				d.log.Warn("blob failed its digest; the next download checks every piece from nodes")
			}
		}
		d.dropTorrent()
		return err
	}
	peers, reg := d.fromPeers.Load(), d.fromRegistry.Load()
	src := "http"
	if peers > 0 || d.torrent != nil {
		src = "p2p"
	}
	// Counted before the commit's syncs: clients already have the bytes.
	fe.deps.Metrics.Fetched(peers, reg)
	h, err := d.pending.Commit(f.Retire)
	if err != nil && h != nil {
		// In the cache, verified, but maybe not on disk: a restart
		// hashes it again before anyone gets it.
		d.log.WithError(err).Warn("cached blob not synced to disk")
		err = nil
	}
	if err != nil {
		d.dropTorrent()
		return err
	}
	f.Finish(h.Release, origin.Outcome{Source: src, FromPeers: peers, FromRegistry: reg})
	if fe.deps.Peers != nil && mi != nil {
		d.seed(mi, unchecked)
	}
	return nil
}

// reserve makes the blob hold size bytes of the store, waiting for room
// up to the configured bound: the cache's bound holds, and a download
// that cannot get room in that time fails (507: the client may retry).
func (d *dl) reserve(ctx context.Context, size int64) error {
	ctx, cancel := context.WithTimeout(ctx, d.fe.cfg.RoomWait)
	defer cancel()
	waited, err := d.pending.Reserve(ctx, size)
	if waited {
		d.fe.deps.Metrics.RoomWait(err == nil)
	}
	if err != nil && d.fe.life.Err() == nil {
		return &origin.RequestError{Status: http.StatusInsufficientStorage, Code: "UNAVAILABLE",
			Msg: fmt.Sprintf("no room in the cache for blob sha256:%s (%d bytes) within %s", d.req.Hex, size, d.fe.cfg.RoomWait)}
	}
	return err
}

func (d *dl) dropTorrent() {
	if d.torrent != nil {
		d.torrent.Drop()
	}
}
