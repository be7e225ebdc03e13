package agent

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"net/http"
	"net/url"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"
)

// fetchReq is one blob download: where from and with whose credentials. The
// credentials are used for this download only and never logged or stored.
type fetchReq struct {
	base string // upstream registry base URL
	repo string
	hex  string // sha256 hex
	auth string // Authorization header value, may be empty
}

// flight is one in-progress download shared by every requester of the blob
// (single flight). Bytes land in the partial file; avail is the length of
// the verified-or-streamed prefix readers may serve.
type flight struct {
	hex string

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	size    int64         // -1 until known
	avail   int64
	done    bool
	err     error
	file    *os.File
	handle  *CacheHandle
	refs    int

	source       string // p2p or http
	fromPeers    int64
	fromRegistry int64
}

func (f *flight) update(fn func()) {
	f.mu.Lock()
	fn()
	close(f.changed)
	f.changed = make(chan struct{})
	f.mu.Unlock()
}

// readable is how far readers may go. The last byte is held back until the
// sha256 of the whole blob checked out, so a client never receives a
// complete-looking copy of corrupt data.
func (f *flight) readable() (end, size int64, done bool, err error, ch <-chan struct{}) {
	f.mu.Lock()
	defer f.mu.Unlock()
	end = f.avail
	if !f.done && f.size > 0 && end >= f.size {
		end = f.size - 1
	}
	return end, f.size, f.done, f.err, f.changed
}

func (f *flight) release() {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	f.mu.Unlock()
	if last {
		if f.file != nil {
			f.file.Close()
		}
		if f.handle != nil {
			f.handle.Release()
		}
	}
}

// waitSize blocks until the blob size is known or the flight failed.
func (f *flight) waitSize(ctx context.Context) (int64, error) {
	for {
		_, size, done, err, ch := f.readable()
		if err != nil {
			return 0, err
		}
		if size >= 0 || done {
			return size, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// waitDone blocks until the blob is committed to the cache or failed.
func (f *flight) waitDone(ctx context.Context) error {
	for {
		_, _, done, err, ch := f.readable()
		if done || err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// startFlight joins the download of hex or starts it. The returned flight
// is pinned; call release when done with it.
func (a *Agent) startFlight(req fetchReq) (*flight, bool) {
	a.mu.Lock()
	if f, ok := a.flights[req.hex]; ok {
		f.mu.Lock()
		f.refs++
		f.mu.Unlock()
		a.mu.Unlock()
		return f, false
	}
	f := &flight{hex: req.hex, changed: make(chan struct{}), size: -1, refs: 2}
	a.flights[req.hex] = f
	a.mu.Unlock()
	go a.runFlight(f, req)
	return f, true
}

func (a *Agent) runFlight(f *flight, req fetchReq) {
	log := a.log.WithField("digest", "sha256:"+req.hex)
	start := time.Now()
	err := a.download(a.ctx, f, req)
	if err != nil {
		// Before leaving the flight map: a new flight for this blob would
		// create the same partial path.
		_ = os.Remove(a.cache.partialPath(req.hex))
	}
	a.mu.Lock()
	delete(a.flights, req.hex)
	a.mu.Unlock()
	if err != nil {
		var ue *upstreamError
		if !errors.As(err, &ue) {
			log.WithError(err).Warn("blob download failed")
		}
		f.update(func() { f.err = err })
	} else {
		f.mu.Lock()
		log.WithFields(logrus.Fields{"size": f.size, "source": f.source, "fromPeers": f.fromPeers,
			"fromRegistry": f.fromRegistry, "elapsed": time.Since(start).Round(time.Millisecond)}).Info("blob cached")
		f.mu.Unlock()
	}
	f.release()
}

// download fills the partial file, verifies it and commits it to the cache.
func (a *Agent) download(ctx context.Context, f *flight, req fetchReq) error {
	a.metrics.downloads.Inc()
	file, err := os.OpenFile(a.cache.partialPath(req.hex), os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("create partial blob: %w", err)
	}
	f.update(func() { f.file = file })
	d := &dl{a: a, f: f, req: req, h: sha256.New()}
	defer func() {
		if d.reserved > 0 && !d.committed {
			a.cache.Unreserve(d.reserved)
		}
	}()

	var mi *metainfo.MetaInfo
	var plain *http.Response
	reason := "p2p_disabled"
	if a.tc != nil {
		mi, plain, err = a.askTorrent(ctx, req)
		var ue *upstreamError
		switch {
		case errors.As(err, &ue):
			return err
		case err != nil:
			a.log.WithError(err).WithField("digest", "sha256:"+req.hex).Warn("torrent request failed; using HTTP")
			reason = "torrent_request_failed"
		case mi != nil:
			reason, err = d.viaTorrent(ctx, mi)
			if err != nil {
				return err
			}
		default:
			reason = "no_torrent"
		}
	}
	if !d.complete() {
		a.metrics.fallbacks.WithLabelValues(reason).Inc()
		if err := d.viaHTTP(ctx, plain); err != nil {
			return err
		}
	} else if plain != nil {
		plain.Body.Close()
	}
	return d.finish(mi)
}

// dl is the state of one download attempt.
type dl struct {
	a         *Agent
	f         *flight
	req       fetchReq
	h         hash.Hash // sha256 of the prefix [0, avail)
	reserved  int64
	committed bool
	torrent   *torrent.Torrent // still seeding from the partial file, if any
}

func (d *dl) complete() bool {
	d.f.mu.Lock()
	defer d.f.mu.Unlock()
	return d.f.size >= 0 && d.f.avail == d.f.size
}

func (d *dl) setSize(n int64) error {
	d.f.mu.Lock()
	cur := d.f.size
	d.f.mu.Unlock()
	if cur >= 0 {
		if cur != n {
			return fmt.Errorf("blob sha256:%s: size %d from upstream contradicts %d", d.req.hex, n, cur)
		}
		return nil
	}
	d.a.cache.Reserve(n)
	d.reserved = n
	d.f.update(func() { d.f.size = n })
	return nil
}

// advance records n more bytes of the prefix, already written to the file.
func (d *dl) advance(n int64, fromPeers bool) {
	d.f.update(func() {
		d.f.avail += n
		if fromPeers {
			d.f.fromPeers += n
		} else {
			d.f.fromRegistry += n
		}
	})
}

func isTorrentType(ct string) bool {
	mt, _, _ := mime.ParseMediaType(ct)
	return mt == "application/x-bittorrent"
}

// askTorrent asks the upstream for the blob's torrent. A Shoal registry
// answers 307 to signed torrent metadata; a plain registry answers with the
// blob (200) or a storage redirect, which is returned as plain to be
// streamed over HTTP.
func (a *Agent) askTorrent(ctx context.Context, req fetchReq) (*metainfo.MetaInfo, *http.Response, error) {
	r, err := http.NewRequestWithContext(ctx, http.MethodGet, blobURL(req.base, req.repo, req.hex), nil)
	if err != nil {
		return nil, nil, err
	}
	r.Header.Set("Accept", "application/x-bittorrent")
	if req.auth != "" {
		r.Header.Set("Authorization", req.auth)
	}
	resp, err := a.noRedirect.Do(r)
	if err != nil {
		return nil, nil, fmt.Errorf("ask upstream for torrent: %w", err)
	}
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusTemporaryRedirect, http.StatusFound, http.StatusSeeOther, http.StatusMovedPermanently, http.StatusPermanentRedirect:
		loc, err := resp.Location()
		resp.Body.Close()
		if err != nil {
			return nil, nil, fmt.Errorf("upstream redirect without location: %w", err)
		}
		// The torrent URL is signed; no credentials go there (a storage
		// redirect target would reject them too).
		r2, err := http.NewRequestWithContext(ctx, http.MethodGet, loc.String(), nil)
		if err != nil {
			return nil, nil, err
		}
		r2.Header.Set("Accept", "application/x-bittorrent")
		resp, err = a.plain.Do(r2)
		if err != nil {
			return nil, nil, fmt.Errorf("fetch torrent metadata: %w", err)
		}
		if resp.StatusCode != http.StatusOK {
			resp.Body.Close()
			return nil, nil, fmt.Errorf("fetch torrent metadata: status %d", resp.StatusCode)
		}
	default:
		body, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		return nil, nil, &upstreamError{status: resp.StatusCode, header: resp.Header, body: body}
	}
	if !isTorrentType(resp.Header.Get("Content-Type")) {
		return nil, resp, nil
	}
	defer resp.Body.Close()
	mi, err := metainfo.Load(io.LimitReader(resp.Body, 32<<20))
	if err != nil {
		return nil, nil, fmt.Errorf("parse torrent metadata: %w", err)
	}
	return mi, nil, nil
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

// viaTorrent downloads through the swarm, streaming verified data into the
// prefix. It returns a fallback reason when HTTP has to finish the job; the
// prefix that arrived is kept.
func (d *dl) viaTorrent(ctx context.Context, mi *metainfo.MetaInfo) (string, error) {
	a, f := d.a, d.f
	log := a.log.WithField("digest", "sha256:"+d.req.hex)
	info, err := mi.UnmarshalInfo()
	if err != nil || info.Name != d.req.hex || info.Length <= 0 || len(info.Files) > 0 {
		log.WithError(err).Warn("torrent metadata does not describe this blob; using HTTP")
		return "bad_torrent", nil
	}
	if err := d.setSize(info.Length); err != nil {
		return "", err
	}
	a.dropSeed(d.req.hex)
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return "bad_torrent", nil
	}
	// Web seeds (url-list) would load the registry from every node at
	// once; the spreader fetches the registry's share itself.
	spec.Webseeds = nil
	spec.Trackers = a.withGroup(spec.Trackers)
	spec.Storage = fileStorage{path: a.cache.partialPath(d.req.hex)}
	t, _, err := a.tc.AddTorrentSpec(spec)
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
	// Every piece is wanted from the nodes (anacrolix: rarest first); the
	// spreader decides what comes from the registry. The stream below
	// hands pieces to the client in order as soon as they are verified.
	t.DownloadAll()
	spread := newPieceSpreader(t, a.tc.PeerID())
	a.spreaders.Store(t.InfoHash(), spread)
	defer a.spreaders.Delete(t.InfoHash())
	origin := &originFetcher{d: d, t: t, info: &info, url: blobURL(d.req.base, d.req.repo, d.req.hex)}
	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var workers sync.WaitGroup
	workers.Go(func() {
		// Piece state changes wake the registry workers and the stream.
		states := t.SubscribePieceStateChanges()
		defer states.Close()
		for {
			select {
			case <-rctx.Done():
				return
			case <-states.Values:
				spread.poke()
			}
		}
	})
	settled := make(chan struct{})
	workers.Go(func() {
		spread.settle(rctx)
		close(settled)
		for range originWorkers {
			workers.Go(func() { origin.run(rctx, spread) })
		}
	})

	var reason atomic.Value
	var progressed atomic.Int64
	monitorDone := make(chan struct{})
	go func() {
		defer close(monitorDone)
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		start := time.Now()
		lastAt, last, lastLog := start, int64(0), start
		solo := false
		for {
			select {
			case <-rctx.Done():
				return
			case now := <-tick.C:
				// Waiting for the swarm to form (bounded) is not a stall.
				if settled != nil {
					select {
					case <-settled:
						lastAt, settled = now, nil
					default:
						continue
					}
				}
				// Progress is anything useful arriving for any blob of
				// this node, not what the in-order stream has read:
				// pieces arrive out of order, a large piece shared by many
				// slow nodes takes a while, and anacrolix orders requests
				// across all torrents of the client, so one blob may wait
				// while others are served.
				cst := a.tc.ConnStats()
				cur := t.BytesCompleted() + cst.BytesReadUsefulData.Int64()
				if cur > last {
					last, lastAt = cur, now
				}
				if now.Sub(lastLog) >= 10*time.Second {
					lastLog = now
					log.WithFields(logrus.Fields{"bytes": t.BytesCompleted(), "size": info.Length, "peers": t.Stats().ActivePeers}).Info("swarm download progress")
				}
				switch {
				case now.Sub(start) > a.cfg.P2P.Deadline:
					reason.Store("deadline")
					cancel()
					return
				case spread.busy():
					// Our own registry fetches are under way: slow, maybe,
					// but not stalled (each has its own timeout).
					lastAt = now
				case !solo && now.Sub(lastAt) >= a.cfg.P2P.StallTimeout:
					// Nothing arrives: the nodes can't deliver (none,
					// tracker down, owners gone). Take every missing piece
					// from the registry, whoever's share it is.
					solo = true
					lastAt = now
					a.metrics.fallbacks.WithLabelValues("solo").Inc()
					log.WithField("peers", t.Stats().ActivePeers).Info("swarm stalled; fetching the missing pieces from the registry")
					spread.goSolo()
				case solo && now.Sub(lastAt) >= a.cfg.P2P.StallTimeout:
					reason.Store("stall")
					cancel()
					return
				}
			}
		}
	}()

	buf := make([]byte, info.PieceLength)
	var readErr error
	for next := 0; next < info.NumPieces() && readErr == nil; {
		changed := spread.changes()
		if !t.PieceState(next).Complete {
			select {
			case <-changed:
			case <-rctx.Done():
				readErr = rctx.Err()
			}
			continue
		}
		p := info.Piece(next)
		b := buf[:p.Length()]
		if _, err := f.file.ReadAt(b, p.Offset()); err != nil {
			readErr = fmt.Errorf("read verified piece %d: %w", next, err)
			break
		}
		d.h.Write(b)
		progressed.Add(int64(len(b)))
		d.advance(int64(len(b)), true)
		next++
	}
	cancel()
	<-monitorDone
	workers.Wait()
	// Bytes the Range requests delivered came from the registry, not from
	// peers.
	if ws := origin.bytes.Load(); ws > 0 {
		f.update(func() {
			ws = min(ws, f.fromPeers)
			f.fromPeers -= ws
			f.fromRegistry += ws
		})
	}
	if d.complete() {
		keep = true
		d.torrent = t
		return "", nil
	}
	rs, _ := reason.Load().(string)
	if rs == "" {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		rs = "torrent_error"
		log.WithError(readErr).Warn("swarm read failed")
	}
	log.WithFields(logrus.Fields{"reason": rs, "have": progressed.Load()}).Info("swarm download gave up; resuming over HTTP")
	return rs, nil
}

// viaHTTP fetches the rest of the blob from the upstream, resuming from the
// prefix with Range. plain, if set, is an already-open response with the
// whole blob.
func (d *dl) viaHTTP(ctx context.Context, plain *http.Response) error {
	a, f := d.a, d.f
	const attempts = 4
	var lastErr error
	for i := 0; i < attempts && !d.complete(); i++ {
		resp := plain
		plain = nil
		f.mu.Lock()
		off := f.avail
		f.mu.Unlock()
		if resp == nil {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, blobURL(d.req.base, d.req.repo, d.req.hex), nil)
			if err != nil {
				return err
			}
			if d.req.auth != "" {
				req.Header.Set("Authorization", d.req.auth)
			}
			if off > 0 {
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-", off))
			}
			resp, err = a.plain.Do(req)
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
			var start, end, total int64
			if _, err := fmt.Sscanf(resp.Header.Get("Content-Range"), "bytes %d-%d/%d", &start, &end, &total); err != nil || start != off {
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
			ue := &upstreamError{status: resp.StatusCode, header: resp.Header, body: body}
			if off == 0 && resp.StatusCode < 500 {
				return ue
			}
			lastErr = ue
			continue
		}
		err := d.copyBody(ctx, resp.Body, skip)
		resp.Body.Close()
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				return ctx.Err()
			}
			a.log.WithError(err).WithField("digest", "sha256:"+d.req.hex).Warn("HTTP blob transfer interrupted; resuming")
			continue
		}
		f.mu.Lock()
		unknown, have := f.size < 0, f.avail
		f.mu.Unlock()
		if unknown { // no Content-Length: the end of the body is the end
			if err := d.setSize(have); err != nil {
				return err
			}
		}
	}
	if !d.complete() {
		if lastErr == nil {
			lastErr = errors.New("upstream body shorter than the blob")
		}
		return fmt.Errorf("fetch blob sha256:%s over HTTP: %w", d.req.hex, lastErr)
	}
	return nil
}

// waitHTTP holds back n bytes of HTTP download to the configured rate.
func (a *Agent) waitHTTP(ctx context.Context, n int) error {
	lim := a.httpRate
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

func (d *dl) copyBody(ctx context.Context, body io.Reader, skip int64) error {
	if skip > 0 {
		if _, err := io.CopyN(io.Discard, body, skip); err != nil {
			return err
		}
	}
	buf := make([]byte, 256<<10)
	lastLog := time.Now()
	for {
		n, err := body.Read(buf)
		if time.Since(lastLog) >= 10*time.Second {
			lastLog = time.Now()
			d.f.mu.Lock()
			have, size := d.f.avail, d.f.size
			d.f.mu.Unlock()
			d.a.log.WithFields(logrus.Fields{"digest": "sha256:" + d.req.hex, "bytes": have, "size": size}).Info("HTTP download progress")
		}
		if n > 0 {
			if werr := d.a.waitHTTP(ctx, n); werr != nil {
				return werr
			}
			d.f.mu.Lock()
			off, size := d.f.avail, d.f.size
			d.f.mu.Unlock()
			if size >= 0 && off+int64(n) > size {
				return fmt.Errorf("upstream sent more than %d bytes", size)
			}
			if _, werr := d.f.file.WriteAt(buf[:n], off); werr != nil {
				return fmt.Errorf("write partial blob: %w", werr)
			}
			d.h.Write(buf[:n])
			d.advance(int64(n), false)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// finish verifies the sha256 and commits the blob to the cache; the torrent
// (if any) keeps seeding for the configured time.
func (d *dl) finish(mi *metainfo.MetaInfo) error {
	a, f := d.a, d.f
	if got := hex.EncodeToString(d.h.Sum(nil)); got != d.req.hex {
		a.metrics.mismatches.Inc()
		if d.torrent != nil {
			d.torrent.Drop()
		}
		return fmt.Errorf("blob digest mismatch: want sha256:%s, got sha256:%s; discarded", d.req.hex, got)
	}
	f.mu.Lock()
	size := f.size
	src := "http"
	if f.fromPeers > 0 {
		src = "p2p"
	}
	peers, reg := f.fromPeers, f.fromRegistry
	f.mu.Unlock()
	h, err := a.cache.Commit(d.req.hex, size, d.reserved)
	d.committed = true
	if err != nil {
		if d.torrent != nil {
			d.torrent.Drop()
		}
		return err
	}
	a.metrics.bytes.WithLabelValues("peers").Add(float64(peers))
	a.metrics.bytes.WithLabelValues("registry").Add(float64(reg))
	f.update(func() {
		f.handle = h
		f.done = true
		f.source = src
	})
	if a.tc != nil && mi != nil {
		if err := saveMetainfo(a.cache.torrentPath(d.req.hex), mi); err != nil {
			a.log.WithError(err).Warn("cannot keep torrent metadata; blob will not be seeded after a restart")
		}
		t := d.torrent
		if t == nil {
			// Finished over HTTP: seed from the committed blob instead.
			if t, err = a.seedCached(d.req.hex, mi); err != nil {
				a.log.WithError(err).Warn("cannot seed blob")
				return nil
			}
		}
		a.keepSeeding(d.req.hex, t, a.cfg.P2P.SeedTime)
	}
	return nil
}

func saveMetainfo(path string, mi *metainfo.MetaInfo) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	if err := mi.Write(f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// seedCached adds a torrent that seeds a committed blob file.
func (a *Agent) seedCached(hexd string, mi *metainfo.MetaInfo) (*torrent.Torrent, error) {
	spec, err := torrent.TorrentSpecFromMetaInfoErr(mi)
	if err != nil {
		return nil, err
	}
	spec.Webseeds = nil
	spec.Trackers = a.withGroup(spec.Trackers)
	spec.Storage = fileStorage{path: a.cache.blobPath(hexd), complete: true}
	t, _, err := a.tc.AddTorrentSpec(spec)
	return t, err
}

// reseed resumes seeding, after a restart, the cached blobs still inside
// their seed time (counted from when they were cached).
func (a *Agent) reseed() {
	n := 0
	for hexd, mod := range a.cache.Cached() {
		left := a.cfg.P2P.SeedTime - time.Since(mod)
		if left <= 0 {
			continue
		}
		f, err := os.Open(a.cache.torrentPath(hexd))
		if err != nil {
			continue // fetched over plain HTTP: no torrent to seed
		}
		mi, err := metainfo.Load(f)
		f.Close()
		if err != nil {
			continue
		}
		t, err := a.seedCached(hexd, mi)
		if err != nil {
			a.log.WithError(err).WithField("digest", "sha256:"+hexd).Warn("cannot re-seed cached blob")
			continue
		}
		a.keepSeeding(hexd, t, left)
		n++
	}
	if n > 0 {
		a.log.WithField("blobs", n).Info("seeding cached blobs again after restart")
	}
}
