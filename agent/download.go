package agent

import (
	"context"
	"crypto/sha1"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/agent/internal/partial"
	"github.com/shoalproject/shoal/agent/internal/store"
)

// fetchReq is one blob download: where from and with whose credentials. The
// credentials are used for this download only and never logged or stored.
type fetchReq struct {
	base string // upstream registry base URL; must be a configured upstream
	repo string
	hex  string // sha256 hex
	auth string // Authorization header value, may be empty
	// size is what the caller knows of the blob's size (the control API's
	// request, from a manifest), 0 if nothing.
	size int64
}

// errUncheckable: a range of a blob without piece hashes waits for the
// whole blob's digest.
var errUncheckable = partial.ErrUncheckable

// allowUpstream refuses registries that are not configured upstreams: the
// agent connects to nothing else, whatever a request names.
func (a *Agent) allowUpstream(base string) (*Upstream, error) {
	urls := make([]string, len(a.cfg.Upstreams))
	for i, u := range a.cfg.Upstreams {
		urls[i] = u.URL
	}
	i, err := origin.Allowed(urls, base)
	if err != nil {
		return nil, err
	}
	return &a.cfg.Upstreams[i], nil
}

// startFlight joins the download of the blob from req's upstream or starts
// it, after the upstream confirmed (HEAD) that req's credentials may read
// it; that answer also gives the size the download must agree with. The
// returned function detaches the requester; call it when done.
func (a *Agent) startFlight(ctx context.Context, req fetchReq) (*origin.Flight, func(), error) {
	up, err := a.allowUpstream(req.base)
	if err != nil {
		return nil, nil, err
	}
	req.base = up.URL
	size, err := a.origin.CheckAccess(ctx, req.base, req.repo, req.hex, req.auth)
	if err != nil {
		return nil, nil, err
	}
	switch {
	case size > 0 && req.size > 0 && size != req.size:
		return nil, nil, &origin.RequestError{Status: http.StatusBadGateway, Code: "SIZE_INVALID",
			Msg: fmt.Sprintf("upstream says blob sha256:%s has %d bytes, the request %d", req.hex, size, req.size)}
	case size < 0 && req.size > 0:
		size = req.size
	}
	if size > a.cfg.Cache.MaxBytes {
		return nil, nil, &origin.RequestError{Status: http.StatusInsufficientStorage, Code: "SIZE_INVALID",
			Msg: fmt.Sprintf("blob sha256:%s has %d bytes, more than cache.maxBytes", req.hex, size)}
	}
	create := func() (*partial.Blob, error) {
		// A path of the flight's own: two upstreams may download one digest.
		path := a.cache.partialPath(fmt.Sprintf("%s.%d", req.hex, a.dl.partialSeq.Add(1)))
		var b *partial.Blob
		var err error
		if from, ok := a.cache.takeResumable(req.hex); ok {
			// An earlier process's pieces: checked once the torrent
			// gives their hashes (viaTorrent).
			b, err = partial.Resume(a.life.ctx, path, req.hex, from)
		}
		if b == nil {
			b, err = partial.Create(a.life.ctx, path, req.hex)
		}
		if err != nil {
			return nil, err
		}
		if size >= 0 {
			if err := b.SetSize(size); err != nil {
				b.Close()
				return nil, err
			}
		}
		return b, nil
	}
	f, leave, started, err := a.dl.flights.Join(origin.Key{Base: req.base, Hex: req.hex}, origin.Cred{Repo: req.repo, Auth: req.auth}, size, create)
	if err != nil {
		return nil, nil, err
	}
	if started {
		go a.runFlight(f, req)
	}
	return f, leave, nil
}

func (a *Agent) runFlight(f *origin.Flight, req fetchReq) {
	log := a.log.WithField("digest", "sha256:"+req.hex)
	start := time.Now()
	prog := a.metrics.inflight.add(req.hex)
	prog.size.Store(f.Size)
	err := a.download(a.life.ctx, &dl{a: a, f: f, blob: f.Blob, req: req, prog: prog})
	a.metrics.inflight.remove(prog)
	f.End(err)
	if err != nil {
		var ue *origin.UpstreamError
		if !errors.As(err, &ue) {
			log.WithError(err).Warn("blob download failed")
		}
		return
	}
	o := f.Outcome()
	a.metrics.pulls.WithLabelValues(o.Source).Observe(time.Since(start).Seconds())
	log.WithFields(logrus.Fields{"size": f.Blob.Size(), "source": o.Source, "fromPeers": o.FromPeers,
		"fromRegistry": o.FromRegistry, "elapsed": time.Since(start).Round(time.Millisecond)}).Info("blob cached")
}

// dl is the state of one download attempt.
type dl struct {
	a         *Agent
	f         *origin.Flight
	blob      *partial.Blob
	req       fetchReq
	reserved  int64
	committed bool
	torrent   *torrent.Torrent // still seeding from the partial file, if any

	fromPeers, fromRegistry atomic.Int64
	// prog is the live view of this download (progress.go).
	prog *flightProgress
	// dataURL is the registry's signed piece endpoint for this blob, if it
	// offered one: Range requests there cost it a sendfile instead of a
	// trip through distribution.
	dataURL string
}

// download fills the partial blob, verifies it and commits it to the cache.
func (a *Agent) download(ctx context.Context, d *dl) error {
	a.metrics.downloads.Inc()
	defer func() {
		if d.reserved > 0 && !d.committed {
			a.cache.Unreserve(d.reserved)
		}
	}()

	var mi *metainfo.MetaInfo
	var plain *http.Response
	var err error
	reason := "p2p_disabled"
	if a.p2p != nil {
		key := origin.Key{Base: d.req.base, Hex: d.req.hex}
		var memo bool
		if mi, d.dataURL, memo = a.dl.meta.get(key, time.Now()); !memo {
			for {
				c := d.f.Credential()
				mi, plain, d.dataURL, err = a.origin.AskTorrent(ctx, d.req.base, c, d.req.hex)
				if !origin.IsRefusal(err) || !d.f.SwitchCred(c, true) {
					break
				}
			}
			if err == nil && mi != nil {
				a.dl.meta.put(key, mi, d.dataURL, time.Now())
			}
		}
		var ue *origin.UpstreamError
		switch {
		case errors.As(err, &ue):
			return err
		case err != nil:
			a.log.WithError(err).WithField("digest", "sha256:"+d.req.hex).Warn("torrent request failed; using HTTP")
			reason = "torrent_request_failed"
		case mi != nil:
			reason, err = d.viaTorrent(ctx, mi)
			if err != nil {
				return err
			}
			if reason == "bad_torrent" {
				a.dl.meta.forget(key)
				mi = nil // neither kept nor seeded
			}
		default:
			reason = "no_torrent"
		}
	}
	if !d.blob.Complete() {
		a.metrics.fallbacks.WithLabelValues(reason).Inc()
		if err := d.viaHTTP(ctx, plain); err != nil {
			return err
		}
	} else if plain != nil {
		plain.Body.Close()
	}
	return d.finish(ctx, mi)
}

// reserve accounts the blob's size in the cache once it is known.
func (d *dl) reserve(size int64) {
	if d.reserved == 0 && size > 0 {
		d.a.cache.Reserve(size)
		d.reserved = size
	}
}

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
	a := d.a
	log := a.log.WithField("digest", "sha256:"+d.req.hex)
	info, err := mi.UnmarshalInfo()
	if err == nil {
		err = checkInfo(&info, d.req.hex, d.f.Size, a.cfg.Cache.MaxBytes)
	}
	if err != nil {
		log.WithError(err).Warn("torrent metadata does not describe this blob; using HTTP")
		return "bad_torrent", nil
	}
	if err := d.blob.SetLayout(info.Length, info.PieceLength); err != nil {
		return "", err
	}
	d.blob.SetVerifier(func(i int, data []byte) bool {
		sum := sha1.Sum(data)
		return string(sum[:]) == string(info.Piece(i).V1Hash().Value.Bytes())
	})
	if n, err := d.blob.Recover(func(i int, data []byte) bool {
		sum := sha1.Sum(data)
		return string(sum[:]) == string(info.Piece(i).V1Hash().Value.Bytes())
	}); err != nil {
		return "", err
	} else if n > 0 {
		log.WithField("pieces", n).Info("continuing an interrupted download from its verified pieces")
		a.metrics.resumed.Add(float64(n) * float64(info.PieceLength))
	}
	d.reserve(info.Length)
	d.prog.size.Store(info.Length)
	a.seeds.drop(d.req.hex)
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return "bad_torrent", nil
	}
	if a.p2p.Busy(spec.InfoHash) {
		// The same torrent downloading for another upstream's flight: one
		// swarm per torrent, so this one takes HTTP.
		return "torrent_busy", nil
	}
	// Web seeds (url-list) would load the registry from every node at
	// once; the engine fetches the registry's share itself.
	spec.Webseeds = nil
	spec.Trackers = a.withGroup(spec.Trackers)
	spec.Storage = store.Storage{Readers: a.readers, Path: d.blob.Path(), Has: d.blob.Has}
	t, err := a.p2p.Add(spec)
	if err != nil {
		log.WithError(err).Warn("add torrent; using HTTP")
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
	res, err := d.runSwarm(ctx, t, &info, log)
	if err != nil {
		return "", err
	}
	if res.Reason == "" {
		keep = true
		d.torrent = t
		return "", nil
	}
	log.WithFields(logrus.Fields{"reason": res.Reason, "have": d.blob.Prefix()}).Info("swarm download gave up; resuming over HTTP")
	return res.Reason, nil
}

// withGroup appends the node group to announce URLs so the tracker can
// prefer peers of the same group.
func (a *Agent) withGroup(tiers [][]string) [][]string {
	if len(a.cfg.Node.Groups) == 0 {
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
			q.Set("group", a.cfg.Node.Groups[0])
			pu.RawQuery = q.Encode()
			nt = append(nt, pu.String())
		}
		out = append(out, nt)
	}
	return out
}

// viaHTTP fetches the rest of the blob from the upstream, resuming at the
// present prefix with Range. plain, if set, is an already-open response
// with the whole blob.
func (d *dl) viaHTTP(ctx context.Context, plain *http.Response) error {
	a := d.a
	const attempts = 4
	var lastErr error
	for i := 0; i < attempts && !d.blob.Complete(); i++ {
		resp := plain
		plain = nil
		off := d.blob.Prefix()
		var c origin.Cred
		if resp == nil {
			c = d.f.Credential()
			var err error
			resp, err = a.origin.GetBlob(ctx, d.req.base, c, d.req.hex, off)
			if err != nil {
				lastErr = fmt.Errorf("fetch blob over HTTP: %w", err)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(time.Duration(i+1) * 200 * time.Millisecond)
				continue
			}
		}
		skip := int64(0)
		switch resp.StatusCode {
		case http.StatusOK:
			if resp.ContentLength >= 0 {
				if err := d.setSize(resp.ContentLength); err != nil {
					resp.Body.Close()
					return err
				}
			}
			skip = off // a full answer to a Range request: drop what we have
		case http.StatusPartialContent:
			start, _, total, err := parseContentRange(resp.Header.Get("Content-Range"))
			if err != nil || start != off {
				resp.Body.Close()
				return fmt.Errorf("fetch blob over HTTP: bad Content-Range %q for offset %d", resp.Header.Get("Content-Range"), off)
			}
			if err := d.setSize(total); err != nil {
				resp.Body.Close()
				return err
			}
		default:
			body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
			resp.Body.Close()
			ue := &origin.UpstreamError{Status: resp.StatusCode, Header: resp.Header, Body: body}
			if origin.IsRefusal(ue) && c != (origin.Cred{}) && d.f.SwitchCred(c, true) {
				// These credentials expired or never worked: another
				// requester's, without spending an attempt.
				i--
				continue
			}
			if off == 0 && resp.StatusCode < 500 {
				return ue
			}
			lastErr = ue
			continue
		}
		err := d.copyBody(ctx, resp.Body, off, skip)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.log.WithError(err).WithField("digest", "sha256:"+d.req.hex).Warn("HTTP blob transfer interrupted; resuming")
			continue
		}
		if d.blob.Size() < 0 { // no Content-Length: the end of the body is the end
			if err := d.setSize(d.blob.Prefix()); err != nil {
				return err
			}
		}
	}
	if !d.blob.Complete() {
		if lastErr == nil {
			lastErr = errors.New("upstream body shorter than the blob")
		}
		return fmt.Errorf("fetch blob sha256:%s over HTTP: %w", d.req.hex, lastErr)
	}
	return nil
}

// parseContentRange reads a 206's "bytes first-last/total" (RFC 9110).
func parseContentRange(h string) (first, last, total int64, err error) {
	bad := fmt.Errorf("invalid Content-Range %q", h)
	spec, ok := strings.CutPrefix(h, "bytes ")
	if !ok {
		return 0, 0, 0, bad
	}
	rng, tot, ok := strings.Cut(spec, "/")
	if !ok {
		return 0, 0, 0, bad
	}
	f, l, ok := strings.Cut(rng, "-")
	if !ok {
		return 0, 0, 0, bad
	}
	nums := [3]int64{}
	for i, s := range []string{f, l, tot} {
		if s == "" || s[0] < '0' || s[0] > '9' {
			return 0, 0, 0, bad
		}
		if nums[i], err = strconv.ParseInt(s, 10, 64); err != nil {
			return 0, 0, 0, bad
		}
	}
	first, last, total = nums[0], nums[1], nums[2]
	if first > last || last >= total {
		return 0, 0, 0, bad
	}
	return first, last, total, nil
}

// setSize records the size a plain HTTP answer gives, bounded by the cache.
func (d *dl) setSize(n int64) error {
	if n > d.a.cfg.Cache.MaxBytes {
		return fmt.Errorf("blob sha256:%s: %d bytes exceed cache.maxBytes", d.req.hex, n)
	}
	if err := d.blob.SetSize(n); err != nil {
		return err
	}
	d.prog.size.Store(n)
	d.reserve(n)
	return nil
}

// waitHTTP holds back n bytes of download to the configured rate.
func (a *Agent) waitHTTP(ctx context.Context, n int) error {
	lim := a.dl.httpRate
	if lim == nil {
		return nil
	}
	for done := 0; done < n; done += lim.Burst() {
		if err := lim.WaitN(ctx, min(lim.Burst(), n-done)); err != nil {
			return err
		}
	}
	return nil
}

// copyBody appends an HTTP body to the blob from off, after skipping skip
// bytes of it. Without a known size the body is still bounded by the cache.
func (d *dl) copyBody(ctx context.Context, body io.Reader, off, skip int64) error {
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, body, skip); err != nil {
			return err
		}
	}
	if size := d.blob.Size(); size >= 0 {
		// Not a byte past the size the upstream gave, whatever the body
		// (no Content-Length, or a longer one) goes on to send: the digest
		// judges what the size holds.
		body = io.LimitReader(body, size-off)
	}
	buf := make([]byte, 1<<20)
	lastLog := time.Now()
	for {
		n, err := io.ReadFull(body, buf)
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			d.a.log.WithFields(logrus.Fields{"digest": "sha256:" + d.req.hex, "bytes": off, "size": d.blob.Size()}).Info("HTTP download progress")
		}
		if n > 0 {
			if off+int64(n) > d.a.cfg.Cache.MaxBytes {
				return fmt.Errorf("upstream sent more than cache.maxBytes")
			}
			if werr := d.a.waitHTTP(ctx, n); werr != nil {
				return werr
			}
			if werr := d.blob.Append(off, buf[:n]); werr != nil {
				return werr
			}
			off += int64(n)
			d.fromRegistry.Add(int64(n))
			d.prog.fromRegistry.Add(int64(n))
		}
		if err == io.EOF || err == io.ErrUnexpectedEOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// finish waits for the blob's sha256 and commits it to the cache; the
// torrent (if any) keeps seeding for the configured time.
func (d *dl) finish(ctx context.Context, mi *metainfo.MetaInfo) error {
	a, f := d.a, d.f
	unchecked := d.blob.Unchecked()
	if err := d.blob.Wait(ctx); err != nil {
		if errors.Is(err, partial.ErrDigest) {
			a.metrics.mismatches.Inc()
			if unchecked > 0 {
				// Pieces taken from nodes without their SHA-1 check: the
				// next attempt checks every piece and drops the node that
				// sent bad ones.
				a.dl.strict.Store(d.req.hex, true)
				a.log.WithField("digest", "sha256:"+d.req.hex).Warn("blob failed its digest; the next download checks every piece from nodes")
			}
		}
		if d.torrent != nil {
			d.torrent.Drop()
		}
		return err
	}
	size := d.blob.Size()
	peers, reg := d.fromPeers.Load(), d.fromRegistry.Load()
	src := "http"
	if peers > 0 || d.torrent != nil {
		src = "p2p"
	}
	// Counted before the commit's syncs: clients already have the bytes.
	a.metrics.bytes.WithLabelValues(sourcePeer).Add(float64(peers))
	a.metrics.bytes.WithLabelValues(sourceRegistry).Add(float64(reg))
	h, err := a.cache.Commit(d.blob.Path(), d.req.hex, size, d.reserved, f.Retire)
	d.committed = true
	if err != nil && h != nil {
		// In the cache, verified, but maybe not on disk: a restart
		// hashes it again before anyone gets it.
		a.log.WithError(err).Warn("cached blob not synced to disk")
		err = nil
	}
	if err != nil {
		if d.torrent != nil {
			d.torrent.Drop()
		}
		return err
	}
	f.Finish(h.Release, origin.Outcome{Source: src, FromPeers: peers, FromRegistry: reg})
	if a.p2p != nil && mi != nil {
		if err := saveMetainfo(a.cache.torrentPath(d.req.hex), mi); err != nil {
			a.log.WithError(err).Warn("cannot keep torrent metadata; blob will not be seeded after a restart")
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
			if t, err = a.seedCached(d.req.hex, mi); err != nil {
				a.log.WithError(err).Warn("cannot seed blob")
				return nil
			}
		}
		a.seeds.keep(d.req.hex, t, a.cfg.P2P.SeedTime)
	}
	return nil
}

// saveMetainfo replaces path atomically: a crash leaves the old file or
// the new one, never a torn one (a *.tmp left over is removed at start).
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

// seedCached adds a torrent that seeds a committed blob file.
func (a *Agent) seedCached(hexd string, mi *metainfo.MetaInfo) (*torrent.Torrent, error) {
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return nil, err
	}
	spec.Webseeds = nil
	spec.Trackers = a.withGroup(spec.Trackers)
	spec.Storage = store.Storage{Readers: a.readers, Path: a.cache.blobPath(hexd), Has: func(int) bool { return true }}
	return a.p2p.Add(spec)
}

// reseed resumes seeding, after a restart, the cached blobs still inside
// their seed time (counted from when they were cached). It runs in the
// background: each blob is hashed first (a crash or the disk may have left
// it torn; a bad one is deleted), and only then offered to other nodes.
func (a *Agent) reseed(ctx context.Context) {
	n := 0
	for hexd, mod := range a.cache.Cached() {
		if ctx.Err() != nil {
			return
		}
		left := a.cfg.P2P.SeedTime - time.Since(mod)
		if left <= 0 {
			continue
		}
		mi, err := metainfo.LoadFromFile(a.cache.torrentPath(hexd))
		if err != nil {
			continue // fetched over plain HTTP: no torrent to seed
		}
		h, ok := a.cache.Peek(hexd)
		if !ok {
			continue
		}
		info, err := mi.UnmarshalInfo()
		if err == nil {
			err = checkInfo(&info, hexd, h.Size(), a.cfg.Cache.MaxBytes)
		}
		if err == nil {
			err = h.Verify()
		}
		if err != nil {
			h.Release()
			a.log.WithError(err).WithField("digest", "sha256:"+hexd).Warn("not seeding cached blob")
			continue
		}
		t, err := a.seedCached(hexd, mi)
		h.Release()
		if err != nil {
			a.log.WithError(err).WithField("digest", "sha256:"+hexd).Warn("cannot re-seed cached blob")
			continue
		}
		a.seeds.keep(hexd, t, left)
		n++
	}
	if n > 0 {
		a.log.WithField("blobs", n).Info("seeding cached blobs again after restart")
	}
}
