package agent

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/sched"
	"github.com/shoalproject/shoal/internal/peerid"
)

// swarmDownload is the download engine for one blob through the swarm. Its
// run loop alone owns the scheduling state (what is in flight, from whom,
// the idle and stall clocks); it asks sched.Plan what to start, starts it,
// and hears back from the fetches. Bytes go into the partial.Blob, which
// owns the file.
type swarmDownload struct {
	a    *Agent
	d    *dl
	t    *torrent.Torrent
	info *metainfo.Info
	log  *logrus.Entry

	// wake (capacity 1) tells the run loop something a plan depends on
	// changed: a piece arrived, a claim came, a peer said where it serves.
	wake chan struct{}

	// dataURL is the registry's piece endpoint for this blob (nil: use the
	// blob route); fetches read it, the first refusal drops it.
	dataURL atomic.Pointer[string]
	// asked is when the run loop last asked a node for its data port.
	asked map[torrent.PeerID]time.Time

	// Written from anacrolix callbacks and fetches, read by the run loop.
	mu         sync.Mutex
	claims     map[claimKey]time.Time // other nodes' registry fetches
	mine       map[int]struct{}       // this node's, replayed to nodes that connect later
	originSeen bool                   // the tracker named the registry's seeder: it has answered
}

type claimKey struct {
	by    torrent.PeerID
	piece int
}

// claimTTL bounds how long a claim holds if its release never comes (the
// claiming node hung without closing the connection). A closed connection
// drops its claims at once, so this can be long.
const claimTTL = 30 * time.Second

// Settling: how long a node waits at most for the swarm to form before its
// first registry fetch, and for the claims of nodes just connected.
const (
	settleLimit = time.Second
	settleGrace = 20 * time.Millisecond
)

// idleReadTimeout ends a request that delivers nothing for this long (a
// hung peer or registry must not hold pieces forever); requests have no
// overall limit, since a lone node's runs grow to 64 pieces.
const idleReadTimeout = 30 * time.Second

// peerBusyBackoff is how long a node that answered "no upload slot free"
// is left alone.
const peerBusyBackoff = 150 * time.Millisecond

// askDataPortEvery paces asking a node that has pieces for its data port.
const askDataPortEvery = 500 * time.Millisecond

func (a *Agent) newSwarmDownload(d *dl, t *torrent.Torrent, info *metainfo.Info) *swarmDownload {
	s := &swarmDownload{
		a: a, d: d, t: t, info: info,
		log:    a.log.WithField("digest", "sha256:"+d.req.hex),
		wake:   make(chan struct{}, 1),
		claims: map[claimKey]time.Time{},
		mine:   map[int]struct{}{},
		asked:  map[torrent.PeerID]time.Time{},
	}
	if d.dataURL != "" {
		s.dataURL.Store(&d.dataURL)
	}
	return s
}

func (s *swarmDownload) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// receivedClaims applies a claim or release from another node. Indexes
// beyond the blob are dropped: the map holds at most one claim per piece
// and connected node.
func (s *swarmDownload) receivedClaims(from torrent.PeerID, op byte, pieces []int) {
	n := s.info.NumPieces()
	s.mu.Lock()
	now := time.Now()
	for _, i := range pieces {
		if i < 0 || i >= n {
			continue
		}
		if op == opClaim {
			s.claims[claimKey{from, i}] = now
		} else {
			delete(s.claims, claimKey{from, i})
		}
	}
	s.mu.Unlock()
	s.poke()
}

// tell sends a claim message to every connected node.
func (s *swarmDownload) tell(op byte, pieces []int) {
	if len(pieces) == 0 {
		return
	}
	msg := encodeClaims(op, pieces)
	for _, pc := range s.t.PeerConns() {
		if !peerid.IsOrigin(pc.PeerID) {
			// Nodes without the extension (other clients) just fetch more
			// from the registry; nothing to do about it here.
			_ = pc.WriteExtendedMessage(shoalExtension, msg)
		}
	}
}

func (s *swarmDownload) claim(pieces []int) {
	s.mu.Lock()
	for _, i := range pieces {
		s.mine[i] = struct{}{}
	}
	s.mu.Unlock()
	s.tell(opClaim, pieces)
}

// unclaim ends this node's claims; failed pieces are released to the
// other nodes (a piece that arrived is announced by anacrolix instead).
func (s *swarmDownload) unclaim(pieces []int, failed bool) {
	s.mu.Lock()
	for _, i := range pieces {
		delete(s.mine, i)
	}
	s.mu.Unlock()
	if failed {
		s.tell(opRelease, pieces)
	}
}

// greet replays this node's claims to a node that has just connected
// (retrying while the connection's extension IDs are being set up: a lost
// replay means the node fetches our claimed pieces too).
func (s *swarmDownload) greet(pc *torrent.PeerConn) {
	s.mu.Lock()
	pieces := slices.Collect(maps.Keys(s.mine))
	s.mu.Unlock()
	if len(pieces) > 0 {
		sendExtension(pc, encodeClaims(opClaim, pieces))
	}
}

// snapshot collects what the plan depends on. The caller owns the
// in-flight state it passes in.
func (s *swarmDownload) snapshot(now time.Time, banned map[string]bool) (sched.Snapshot, map[string]string) {
	snap := sched.Snapshot{Now: now, NumPieces: s.info.NumPieces(), Self: selfID(s.a.tc),
		Have: roaring.BitmapOf(s.d.blob.AppendPresent(nil)...), Claimed: roaring.New()}
	addrs := map[string]string{}
	connected := map[torrent.PeerID]bool{}
	for _, pc := range s.t.PeerConns() {
		id := string(pc.PeerID[:])
		if peerid.IsOrigin(pc.PeerID) || banned[id] {
			continue
		}
		connected[pc.PeerID] = true
		p := sched.Peer{ID: id, Has: pc.PeerPieces()}
		if port, ok := s.a.peerPorts.Load(pc); ok {
			if host, _, err := net.SplitHostPort(pc.RemoteAddr.String()); err == nil {
				addrs[id] = net.JoinHostPort(host, strconv.Itoa(port.(int)))
				p.Data = true
			}
		} else if !p.Has.IsEmpty() && now.Sub(s.asked[pc.PeerID]) >= askDataPortEvery {
			// It has pieces and we don't know where it serves them.
			s.asked[pc.PeerID] = now
			go s.a.tellDataPort(pc, opDataAsk)
		}
		snap.Peers = append(snap.Peers, p)
	}
	s.mu.Lock()
	for k, at := range s.claims {
		if !connected[k.by] || now.Sub(at) > claimTTL {
			delete(s.claims, k)
			continue
		}
		snap.Claimed.Add(uint32(k.piece))
	}
	s.mu.Unlock()
	return snap, addrs
}

// settled reports whether the swarm had its chance to form: the tracker
// answered (it named somebody, if only the registry's seeder) and the
// connections it named are made, or settleLimit passed. readyAt carries
// the moment the condition first held, for the grace period.
func (s *swarmDownload) settled(now, start time.Time, readyAt *time.Time) bool {
	if now.Sub(start) >= settleLimit {
		return true
	}
	st := s.t.Stats()
	s.mu.Lock()
	originSeen := s.originSeen
	s.mu.Unlock()
	if !((st.TotalPeers > 0 || originSeen) && st.PendingPeers == 0 && st.HalfOpenPeers == 0) {
		return false
	}
	nodes := 0
	for _, pc := range s.t.PeerConns() {
		if !peerid.IsOrigin(pc.PeerID) { // the seeder's connection is being closed
			nodes++
		}
	}
	if nodes == 0 {
		return true // alone: nobody's claims to wait for
	}
	if readyAt.IsZero() {
		*readyAt = now
	}
	return now.Sub(*readyAt) >= settleGrace
}

// pieceRange lists the pieces a fetch covers.
func pieceRange(f sched.Fetch) []int {
	pieces := make([]int, f.Count)
	for k := range pieces {
		pieces[k] = f.First + k
	}
	return pieces
}

type fetchResult struct {
	f       sched.Fetch
	err     error
	badPeer bool // sent bytes that failed their SHA-1
}

// run fetches every piece of the blob, or returns the reason the swarm
// path gave up (the pieces that arrived are kept).
func (s *swarmDownload) run(ctx context.Context) (reason string, err error) {
	a := s.a
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan fetchResult)
	var running sync.WaitGroup

	var (
		inFlight                 = roaring.New()
		aloneRun                 int // pieces per registry request while alone; grows
		peerBusy                 = map[string]int{}
		peerBackoff              = map[string]time.Time{} // nodes whose upload slots were full
		banned                   = map[string]bool{}
		originBusy, originPieces int
		originFailures           int
		originPausedUntil        time.Time
		idleSince, readyAt       time.Time
		solo, isSettled          bool
		start                    = time.Now()
		lastProgress             = start
		lastReceived             = a.received.Load()
		lastLog                  = start
		pending                  int
	)
	defer func() {
		// Fetches still running end with the context; their results are
		// drained so none blocks.
		cancel()
		for ; pending > 0; pending-- {
			<-results
		}
		running.Wait()
	}()
	// Fine-grained while settling (its grace is 20 ms), coarse after.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()

	for !s.d.blob.Complete() {
		now := time.Now()
		if !isSettled && s.settled(now, start, &readyAt) {
			isSettled, lastProgress = true, now
			tick.Reset(50 * time.Millisecond)
			s.log.WithFields(logrus.Fields{"after": now.Sub(start).Round(time.Millisecond), "nodes": len(s.t.PeerConns())}).Debug("swarm settled")
		}
		snap, addrs := s.snapshot(now, banned)
		snap.InFlight, snap.OriginBusy, snap.OriginPieces = inFlight, originBusy, originPieces
		snap.Settled, snap.Solo, snap.IdleSince = isSettled, solo, idleSince
		if len(snap.Peers) > 0 {
			aloneRun = 0
		} else if isSettled {
			st := s.t.Stats()
			snap.Forming = st.PendingPeers+st.HalfOpenPeers > 0
		}
		snap.AloneRun = aloneRun
		for i := range snap.Peers {
			p := &snap.Peers[i]
			p.Busy = peerBusy[p.ID]
			if now.Before(peerBackoff[p.ID]) {
				p.Busy = sched.DefaultLimits.PerPeer // asked again after the backoff
			}
		}
		var plan []sched.Fetch
		plan, idleSince = sched.Plan(snap, sched.DefaultLimits)
		for _, f := range plan {
			if f.Origin() && now.Before(originPausedUntil) {
				continue
			}
			inFlight.AddRange(uint64(f.First), uint64(f.First+f.Count))
			pending++
			running.Add(1)
			if f.Origin() {
				originBusy++
				originPieces += f.Count
				s.claim(pieceRange(f))
				go func() { defer running.Done(); results <- fetchResult{f: f, err: s.fetchOrigin(ctx, f)} }()
			} else {
				peerBusy[f.Peer]++
				addr := addrs[f.Peer]
				go func() {
					defer running.Done()
					bad, err := s.fetchPeer(ctx, f, addr)
					results <- fetchResult{f: f, err: err, badPeer: bad}
				}()
			}
		}

		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case r := <-results:
			pending--
			inFlight.RemoveRange(uint64(r.f.First), uint64(r.f.First+r.f.Count))
			if r.f.Origin() {
				originBusy--
				originPieces -= r.f.Count
				s.unclaim(pieceRange(r.f), r.err != nil)
				if r.err == nil && len(snap.Peers) == 0 {
					// Still alone: likely to stay so; take more at once.
					aloneRun = max(2*aloneRun, 2*r.f.Count)
				}
				if r.err != nil {
					// The registry may be restarting; the stall watch
					// decides when to give up on pieces altogether.
					originFailures++
					originPausedUntil = time.Now().Add(time.Duration(min(originFailures, 10)) * 100 * time.Millisecond)
					s.log.WithError(r.err).Debug("pieces from the registry failed")
				} else {
					originFailures = 0
				}
			} else {
				peerBusy[r.f.Peer]--
				var se *statusError
				if errors.As(r.err, &se) && se.status == http.StatusServiceUnavailable {
					// Its upload slots are taken: ask the piece's other
					// holders for a moment (BitTorrent's choking, by answer).
					peerBackoff[r.f.Peer] = time.Now().Add(peerBusyBackoff)
				}
				if errors.Is(r.err, errPeerIdle) {
					// Advertising pieces and not sending them (or a byte at
					// a time) must not hold the blob: its pieces go to
					// other nodes or the registry.
					banned[r.f.Peer] = true
					a.metrics.fallbacks.WithLabelValues("idle_peer").Inc()
					s.log.WithError(r.err).Warn("a node did not deliver the pieces it has; not asking it again for this blob")
				} else if r.badPeer {
					banned[r.f.Peer] = true
					a.metrics.fallbacks.WithLabelValues("bad_peer_data").Inc()
					s.log.WithError(r.err).Warn("a node sent pieces that failed their check; not asking it again for this blob")
				} else if r.err != nil {
					s.log.WithError(r.err).Debug("pieces from a node failed")
				}
			}
		case <-s.wake:
		case <-tick.C:
		}

		now = time.Now()
		if cur := a.received.Load(); cur != lastReceived {
			lastReceived, lastProgress = cur, now
		}
		if now.Sub(lastLog) >= 10*time.Second {
			lastLog = now
			s.log.WithFields(logrus.Fields{"bytes": s.d.blob.Prefix(), "size": s.info.Length, "peers": len(snap.Peers)}).Info("swarm download progress")
		}
		if !isSettled {
			continue
		}
		switch sched.Watch(now, start, lastProgress, originBusy > 0, solo, a.cfg.P2P.StallTimeout, a.cfg.P2P.Deadline) {
		case sched.GoSolo:
			// Nothing arrives: the nodes can't deliver (none, tracker
			// down, owners gone). Take every missing piece from the
			// registry, whoever's share it is.
			solo, lastProgress = true, now
			a.metrics.fallbacks.WithLabelValues("solo").Inc()
			s.log.WithField("peers", len(snap.Peers)).Info("swarm stalled; fetching the missing pieces from the registry")
		case sched.GiveUp:
			if now.Sub(start) > a.cfg.P2P.Deadline {
				return "deadline", nil
			}
			return "stall", nil
		}
	}
	return "", nil
}

// fetchPeer asks a node for a run of pieces over the data path and checks
// each against its SHA-1 before it is written: a node is not trusted.
func (s *swarmDownload) fetchPeer(ctx context.Context, f sched.Fetch, addr string) (badPeer bool, err error) {
	if addr == "" {
		return false, errors.New("node has no data address")
	}
	target := "https://" + addr + dataPathPrefix + hex.EncodeToString(s.t.InfoHash().Bytes())
	return s.fetchRun(ctx, f, target, "", true)
}

// mustCheck decides whether pieces from a node are SHA-1-checked as they
// arrive. They must be when a connected node lacks one of them (it may
// want it from us before our blob is complete: only checked pieces are
// offered), or after this blob once failed its digest here. Otherwise the
// whole blob's sha256, checked before a client sees its last byte, guards
// them, and they are offered to other nodes once it matched: on a node
// pulling from complete copies that saves a third of the receiving CPU.
func (s *swarmDownload) mustCheck(f sched.Fetch) bool {
	if _, strict := s.a.strict.Load(s.d.req.hex); strict {
		return true
	}
	for _, pc := range s.t.PeerConns() {
		if peerid.IsOrigin(pc.PeerID) {
			continue
		}
		if pc.PeerPieces().CardinalityInRange(uint64(f.First), uint64(f.First+f.Count)) < uint64(f.Count) {
			return true
		}
	}
	return false
}

// fetchOrigin takes a run of pieces from the registry with one Range
// request. The bytes are not SHA-1-checked here: they come from the same
// registry as the torrent's hashes, the blob's sha256 is checked before
// anything is released, and nodes check every piece they get from us.
func (s *swarmDownload) fetchOrigin(ctx context.Context, f sched.Fetch) error {
	if u := s.dataURL.Load(); u != nil {
		_, err := s.fetchRun(ctx, f, *u, "", false)
		var se *statusError
		if !errors.As(err, &se) || se.status < 400 || se.status >= 500 {
			return err
		}
		// Refused (the signed URL expired, or the registry no longer
		// serves it): the blob route with the client's credentials.
		s.dataURL.CompareAndSwap(u, nil)
		s.log.WithField("status", se.status).Debug("registry's piece endpoint refused; using the blob route")
	}
	c := s.d.f.credential()
	_, err := s.fetchRun(ctx, f, blobURL(s.d.req.base, c.repo, s.d.req.hex), c.auth, false)
	var se *statusError
	if errors.As(err, &se) && (se.status == http.StatusUnauthorized || se.status == http.StatusForbidden) {
		// Expired or never valid: the next attempt uses another
		// requester's credentials if one has some.
		s.a.switchCred(s.d.f, c, false)
	}
	return err
}

// errPeerIdle marks a request to a node that delivered no whole piece for
// idleReadTimeout.
var errPeerIdle = errors.New("node delivered no piece in time")

// statusError is an unexpected HTTP answer to a Range request.
type statusError struct {
	status int
	what   string
}

func (e *statusError) Error() string { return e.what }

func (s *swarmDownload) fetchRun(ctx context.Context, f sched.Fetch, target, auth string, fromPeer bool) (badPeer bool, err error) {
	a := s.a
	first := s.info.Piece(f.First)
	last := s.info.Piece(f.First + f.Count - 1)
	from, to := first.Offset(), last.Offset()+last.Length()-1
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Ends the request when nothing arrives for a while; reset per piece.
	var idle atomic.Bool
	watchdog := time.AfterFunc(idleReadTimeout, func() { idle.Store(true); cancel() })
	defer watchdog.Stop()
	defer func() {
		if err != nil && idle.Load() && fromPeer {
			// Bytes trickling in keep the stall watch content; a node that
			// cannot finish a piece in idleReadTimeout is not asked again.
			err = fmt.Errorf("%w: %w", errPeerIdle, err)
		}
	}()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return false, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", from, to))
	client := a.plain
	if fromPeer {
		client = a.peerClient
	}
	resp, err := client.Do(req)
	if err != nil {
		// Not the *url.Error itself: the registry's signed URL carries a
		// token, and errors end up in logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return false, fmt.Errorf("pieces %d+%d from %s: %w", f.First, f.Count, req.URL.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return false, &statusError{status: resp.StatusCode, what: fmt.Sprintf("pieces %d+%d: Range request answered %s", f.First, f.Count, resp.Status)}
	}
	if want := fmt.Sprintf("bytes %d-%d/%d", from, to, s.info.Length); resp.Header.Get("Content-Range") != want {
		return false, fmt.Errorf("pieces %d+%d: Content-Range %q, want %q", f.First, f.Count, resp.Header.Get("Content-Range"), want)
	}
	// Progress for the stall watch is every byte arriving, not every
	// piece: on a slow link shared by many requesters a piece takes a while.
	body := countingReader{r: resp.Body, n: &a.received}
	check := fromPeer && s.mustCheck(f)
	for i := f.First; i < f.First+f.Count; i++ {
		p := s.info.Piece(i)
		// A buffer per piece, lent to the blob's hasher once written.
		buf := getPieceBuf(s.info.PieceLength)
		b := buf[:p.Length()]
		if err := a.waitHTTP(ctx, len(b)); err != nil {
			return false, err
		}
		n, err := io.ReadFull(body, b)
		if fromPeer {
			a.metrics.swarm.WithLabelValues("all").Add(float64(n))
		}
		if err != nil {
			putPieceBuf(buf)
			return false, fmt.Errorf("piece %d: %w", i, err)
		}
		watchdog.Reset(idleReadTimeout)
		if check {
			if sum := sha1.Sum(b); string(sum[:]) != string(p.V1Hash().Value.Bytes()) {
				putPieceBuf(buf)
				return true, fmt.Errorf("piece %d failed its SHA-1 check", i)
			}
		}
		if fromPeer {
			a.metrics.swarm.WithLabelValues("useful").Add(float64(n))
		}
		if err := s.d.blob.WritePieceLent(i, b, !fromPeer || check, func() { putPieceBuf(buf) }); err != nil {
			return false, err
		}
		if fromPeer {
			s.d.fromPeers.Add(int64(n))
		} else {
			s.d.fromRegistry.Add(int64(n))
			a.metrics.origin.WithLabelValues(f.Why).Add(float64(n))
		}
		// Anacrolix reads presence from the blob; this makes it look and
		// announce the piece to the nodes.
		s.t.Piece(i).UpdateCompletion()
		s.poke()
	}
	return false, nil
}

func selfID(tc *torrent.Client) string {
	id := tc.PeerID()
	return string(id[:])
}

// Piece buffers are reused across requests: a fresh megabyte per request
// is garbage the collector hands back to the kernel, and the next one is
// faulted in again page by page.
var pieceBufs sync.Map // piece length → *sync.Pool

func getPieceBuf(n int64) []byte {
	p, _ := pieceBufs.LoadOrStore(n, &sync.Pool{New: func() any { return make([]byte, n) }})
	return p.(*sync.Pool).Get().([]byte)
}

func putPieceBuf(b []byte) {
	if p, ok := pieceBufs.Load(int64(len(b))); ok {
		p.(*sync.Pool).Put(b)
	}
}

// countingReader adds what it reads to n.
type countingReader struct {
	r io.Reader
	n *atomic.Int64
}

func (c countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n.Add(int64(k))
	return k, err
}
