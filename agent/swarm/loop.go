package swarm

import (
	"context"
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/sched"
	"github.com/shoalproject/shoal/internal/regshare"
)

// Settling: how long a node waits at most for the swarm to form before its
// first registry fetch, and for the claims of nodes just connected.
const (
	settleLimit = time.Second
	settleGrace = 100 * time.Millisecond
)

// peerBusyBackoff is how long a node that answered "no upload slot free"
// is left alone.
const peerBusyBackoff = 150 * time.Millisecond

// Ticks: fine-grained while settling (its grace is 20 ms), coarse after,
// and coarser on slow links: ticksPerPiece per piece-time at the rate the
// blob arrives at, within [runTick, maxRunTick]. Each tick plans over
// every connected node's pieces; at 10 Mbit/s a piece of a layer takes
// seconds, and 20 plans a second per blob were most of an agent's CPU at
// N = 16 (issue 20, profile in docs/performance.md "Scale").
const (
	settleTick    = 5 * time.Millisecond
	runTick       = 50 * time.Millisecond
	maxRunTick    = 250 * time.Millisecond
	ticksPerPiece = 8
)

// loop is the state of one Run, owned by its goroutine: what is in flight
// and from whom, how the blob progresses, which phase it is in.
type loop struct {
	e       *Engine
	results chan fetchResult
	running sync.WaitGroup
	pending int // fetches whose result is not read yet
	tick    clockwork.Ticker
	period  time.Duration // the tick's, once settled
	origin  originState
	nodes   nodeState
	phase   phase
	watch   progress
	lastLog time.Time
}

// originState is this node's registry requests.
type originState struct {
	inFlight    *roaring.Bitmap
	busy        int // requests
	pieces      int // their pieces not arrived yet
	failures    int // in a row, for the pause after a failure
	pausedUntil time.Time
	// run is how many pieces a request may take while alone; it doubles
	// with every run that completes alone.
	run int
	// taken are pieces the registry refused as shares because another
	// node fetched them a moment ago (regshare), until when they are
	// left to the swarm.
	taken map[uint32]time.Time
	// urgent is the requests for pieces readers wait for, counted apart
	// from busy and pieces: they are not the share's.
	urgent int
}

// nodeState is this node's requests to other nodes and what it learnt of
// them.
type nodeState struct {
	inFlight *roaring.Bitmap
	busy     map[string]int       // requests in flight, by node
	backoff  map[string]time.Time // nodes whose upload slots were full
	banned   map[string]bool      // nodes that did not deliver or lied
	seen     []sched.Peer         // the last listing, banned nodes included
}

// phase is where the download stands.
type phase struct {
	start   time.Time
	readyAt time.Time // the swarm looked formed (settling's grace)
	// readyNodes is how many nodes were connected at readyAt.
	readyNodes int
	idleSince  time.Time // Plan's idle clock, for stealing
	settled    bool
	solo       bool // stalled: the registry for every missing piece
}

// progress is the stall watch's view of this blob.
type progress struct {
	have       int       // pieces present at the last look
	lastPiece  time.Time // the stall clock: when the blob last gained a piece, or waited on the registry
	gained     time.Time // when the blob last gained a piece (or settled)
	origin     int64     // registry bytes at the last look
	lastOrigin time.Time // when registry bytes last arrived
	// firstAt and firstHave start the observed rate: pieces gained since
	// firstAt, over the time since.
	firstAt   time.Time
	firstHave int
	rate      float64 // bytes/s, 0 until measured
}

// resultsQueue is room for the results of every fetch a plan starts with
// sched.DefaultLimits and a few dozen nodes; beyond it, fetches wait.
const resultsQueue = 64

type fetchResult struct {
	f       sched.Fetch
	err     error
	badPeer bool // sent bytes that failed their SHA-1
}

func newLoop(e *Engine) *loop {
	now := e.deps.Clock.Now()
	return &loop{
		e: e,
		// Buffered: a fetch that is done never waits for the loop.
		results: make(chan fetchResult, resultsQueue),
		origin:  originState{inFlight: roaring.New(), taken: map[uint32]time.Time{}},
		nodes: nodeState{inFlight: roaring.New(), busy: map[string]int{},
			backoff: map[string]time.Time{}, banned: map[string]bool{}},
		phase:   phase{start: now},
		watch:   progress{lastPiece: now, lastOrigin: now},
		lastLog: now,
	}
}

func (l *loop) run(ctx context.Context) (reason string, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		// Fetches still running end with the context; their results are
		// drained so none blocks.
		cancel()
		for ; l.pending > 0; l.pending-- {
			<-l.results
		}
		l.running.Wait()
	}()
	l.tick = l.e.deps.Clock.NewTicker(settleTick)
	defer l.tick.Stop()
	for !l.e.deps.Blob.Complete() {
		now := l.e.deps.Clock.Now()
		l.settle(now)
		snap := l.snapshot(now)
		var wanted <-chan struct{}
		if l.e.deps.Wants != nil {
			snap.Urgent, wanted = l.e.deps.Wants.List()
			snap.UrgentBusy = l.origin.urgent
		}
		if reason := l.check(now, len(snap.Peers), l.awaited(now, snap)); reason != "" {
			return reason, nil
		}
		snap.Solo = l.phase.solo
		l.start(ctx, snap)
		if l.e.idle != nil {
			l.e.idle(l.pending, func() int { return len(l.results) })
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case r := <-l.results:
			l.pending--
			l.done(r, len(snap.Peers) == 0)
		case <-l.e.wake:
		case <-l.e.deps.Peers.Changed():
		case <-wanted:
		case <-l.tick.Chan():
		}
	}
	return "", nil
}

// settle ends settling once the swarm had its chance to form: the tracker
// answered and the connections it named are made (plus a grace for their
// claims), or settleLimit passed.
func (l *loop) settle(now time.Time) {
	if l.phase.settled || !l.formed(now) {
		return
	}
	l.phase.settled = true
	l.watch.lastPiece, l.watch.lastOrigin, l.watch.gained = now, now, now
	l.period = runTick
	l.tick.Reset(runTick)
	l.e.deps.Log.WithField("after", now.Sub(l.phase.start).Round(time.Millisecond)).Debug("swarm settled")
}

func (l *loop) formed(now time.Time) bool {
	if now.Sub(l.phase.start) >= settleLimit {
		return true
	}
	answered, forming := l.e.deps.Peers.Formation()
	if !answered || forming {
		l.phase.readyAt = time.Time{}
		return false
	}
	nodes := len(l.e.deps.Peers.Nodes())
	if nodes == 0 {
		return true // alone: nobody's claims to wait for
	}
	// The grace runs while the view stays the same: in a rollout, nodes
	// that announced later keep connecting to the early ones, and shares
	// computed over a view still growing give blocks two owners
	// (issue 20: 3.3× the image fetched as shares at N = 16 on a busy
	// host).
	if l.phase.readyAt.IsZero() || nodes != l.phase.readyNodes {
		l.phase.readyAt, l.phase.readyNodes = now, nodes
	}
	return now.Sub(l.phase.readyAt) >= settleGrace
}

// snapshot collects what the plan depends on, and notes the blob's
// progress for the stall watch.
func (l *loop) snapshot(now time.Time) sched.Snapshot {
	p := l.e.deps.Peers
	have := roaring.BitmapOf(l.e.deps.Blob.AppendPresent(nil)...)
	l.observe(now, int(have.GetCardinality()))
	snap := sched.Snapshot{
		Now: now, NumPieces: l.e.cfg.Layout.NumPieces(), Self: p.Self(), Have: have,
		InFlight: roaring.Or(l.nodes.inFlight, l.origin.inFlight),
		OriginState: sched.OriginState{OriginInFlight: l.origin.inFlight,
			OriginBusy: l.origin.busy, OriginPieces: l.origin.pieces},
		Claimed: p.Claimed(now, func(id string) bool { return l.nodes.banned[id] }),
		Phase:   sched.Phase{Settled: l.phase.settled, IdleSince: l.phase.idleSince},
	}
	// Pieces another node fetches from the registry, as the registry told
	// us, count as claimed.
	for i, until := range l.origin.taken {
		if !now.Before(until) {
			delete(l.origin.taken, i)
			continue
		}
		snap.Claimed.Add(i)
	}
	l.nodes.seen = p.Nodes()
	for _, n := range l.nodes.seen {
		if l.nodes.banned[n.ID] {
			continue
		}
		n.Busy = l.nodes.busy[n.ID]
		if now.Before(l.nodes.backoff[n.ID]) {
			n.Busy = l.e.cfg.Limits.PerPeer // asked again after the backoff
		}
		snap.Peers = append(snap.Peers, n)
	}
	if len(snap.Peers) > 0 {
		l.origin.run = 0
	} else if l.phase.settled {
		_, snap.Forming = p.Formation()
	}
	snap.AloneRun = l.origin.run
	return snap
}

// observe records progress: pieces gained (from anywhere) and registry
// bytes arriving.
func (l *loop) observe(now time.Time, have int) {
	w := &l.watch
	if have > w.have {
		if w.firstAt.IsZero() {
			w.firstAt, w.firstHave = now, have
		} else if d := now.Sub(w.firstAt).Seconds(); d > 0 {
			w.rate = float64(int64(have-w.firstHave)*l.e.cfg.Layout.PieceLength) / d
			l.pace()
		}
		w.have, w.lastPiece, w.gained = have, now, now
	}
	if b := l.e.originBytes.Load(); b != w.origin {
		w.origin, w.lastOrigin = b, now
	}
}

// pace sets the tick to ticksPerPiece per piece-time at the observed
// rate, within [runTick, maxRunTick]; pokes (a piece written, a fetch
// done, a node connected, a claim) still wake the loop at once.
func (l *loop) pace() {
	if !l.phase.settled || l.watch.rate <= 0 {
		return
	}
	want := time.Duration(float64(l.e.cfg.Layout.PieceLength) / l.watch.rate / ticksPerPiece * float64(time.Second))
	want = min(max(want, runTick), maxRunTick)
	if d := want - l.period; d > l.period/4 || -d > l.period/4 {
		l.period = want
		l.tick.Reset(want)
	}
}

// bound is the stall bound now (sched.StallBound).
func (l *loop) bound() time.Duration {
	return sched.StallBound(l.e.cfg.Layout.PieceLength, max(l.watch.rate, l.e.cfg.AssumedRate), l.e.cfg.StallTimeout)
}

// awaited reports whether the registry is working on this blob: a
// connected node has claimed a piece missing here (its registry fetch is
// under way), or registry bytes of this node's own fetches arrived within
// the bound. A swarm whose first pieces all come from a slow registry at
// once (one registry link shared by every owner's pieces of every layer:
// at 10 Mbit/s, 32 pieces of 1 MiB take 27 s to arrive together) gains no
// piece for longer than the stall bound, and is not stalled: going solo
// then only adds to the registry's queue (issue 20: 10× the image in
// registry egress at N = 16).
func (l *loop) awaited(now time.Time, snap sched.Snapshot) bool {
	if l.origin.busy > 0 && now.Sub(l.watch.lastOrigin) < l.bound() {
		return true
	}
	return !roaring.AndNot(snap.Claimed, snap.Have).IsEmpty()
}

// check runs the stall watch; it returns why the swarm path gives up, if
// it does. While awaited (the registry is working on this blob), the
// stall clock holds, for up to sched.MaxStallBound since the last piece:
// claims that never turn into pieces hold a blob for that plus one stall
// bound at most.
func (l *loop) check(now time.Time, peers int, awaited bool) string {
	log := l.e.deps.Log
	if now.Sub(l.lastLog) >= 10*time.Second {
		l.lastLog = now
		log.WithFields(logrus.Fields{"bytes": l.e.deps.Blob.Prefix(), "size": l.e.cfg.Layout.Length, "peers": peers}).Info("swarm download progress")
	}
	if !l.phase.settled {
		return ""
	}
	bound := l.bound()
	if awaited && !l.phase.solo && now.Sub(l.watch.gained) < max(bound, sched.MaxStallBound) {
		l.watch.lastPiece = now
	}
	switch sched.Watch(now, l.phase.start, l.watch.lastPiece, l.watch.lastOrigin, l.phase.solo, bound, l.e.cfg.Deadline) {
	case sched.GoSolo:
		// No piece for a few piece-times, whatever the connections look
		// like (none, forming, advertising and not delivering): every
		// missing piece from the registry, this node's share first.
		l.phase.solo = true
		l.watch.lastPiece, l.watch.lastOrigin = now, now
		l.e.deps.Metrics.Fallback("solo")
		log.WithFields(logrus.Fields{"peers": peers, "bound": bound}).Info("swarm stalled; fetching the missing pieces from the registry")
	case sched.GiveUp:
		if now.Sub(l.phase.start) > l.e.cfg.Deadline {
			return "deadline"
		}
		return "stall"
	}
	return ""
}

// start starts what the plan says.
func (l *loop) start(ctx context.Context, snap sched.Snapshot) {
	var plan []sched.Fetch
	plan, l.phase.idleSince = sched.Plan(snap, l.e.cfg.Limits)
	for _, f := range plan {
		if f.Origin() && snap.Now.Before(l.origin.pausedUntil) {
			continue
		}
		l.pending++
		l.running.Add(1)
		if f.Origin() {
			l.origin.inFlight.AddRange(uint64(f.First), uint64(f.First+f.Count))
			if f.Why == "range" {
				l.origin.urgent++
			} else {
				l.origin.busy++
				l.origin.pieces += f.Count
			}
			l.e.deps.Peers.Claim(pieceRange(f))
			go func() {
				defer l.running.Done()
				l.results <- fetchResult{f: f, err: l.e.fetchOrigin(ctx, f)}
			}()
			continue
		}
		l.nodes.inFlight.AddRange(uint64(f.First), uint64(f.First+f.Count))
		l.nodes.busy[f.Peer]++
		check := l.mustCheck(f)
		go func() {
			defer l.running.Done()
			bad, err := l.e.fetchPeer(ctx, f, check)
			l.results <- fetchResult{f: f, err: err, badPeer: bad}
		}()
	}
}

// mustCheck decides whether pieces from a node are SHA-1-checked as they
// arrive. They must be when a connected node lacks one of them (it may
// want it from us before our blob is complete: only checked pieces are
// offered), or in strict mode. Otherwise the whole blob's sha256, checked
// before a client sees its last byte, guards them, and they are offered to
// other nodes once it matched: on a node pulling from complete copies
// that saves a third of the receiving CPU.
func (l *loop) mustCheck(f sched.Fetch) bool {
	if l.e.cfg.Strict || f.Why == "range" {
		return true
	}
	for _, n := range l.nodes.seen {
		if n.Has.CardinalityInRange(uint64(f.First), uint64(f.First+f.Count)) < uint64(f.Count) {
			return true
		}
	}
	return false
}

// done takes a fetch's result.
func (l *loop) done(r fetchResult, alone bool) {
	if r.f.Origin() {
		l.originDone(r, alone)
		return
	}
	log := l.e.deps.Log.WithError(r.err)
	l.nodes.inFlight.RemoveRange(uint64(r.f.First), uint64(r.f.First+r.f.Count))
	l.nodes.busy[r.f.Peer]--
	var se *StatusError
	if errors.As(r.err, &se) && se.Status == http.StatusServiceUnavailable {
		// Its upload slots are taken: ask the piece's other holders for a
		// moment (BitTorrent's choking, by answer).
		l.nodes.backoff[r.f.Peer] = l.e.deps.Clock.Now().Add(peerBusyBackoff)
	}
	switch {
	case errors.Is(r.err, ErrPeerIdle):
		// Advertising pieces and not sending them (or a byte at a time)
		// must not hold the blob: its pieces go to other nodes or the
		// registry.
		l.nodes.banned[r.f.Peer] = true
		l.e.deps.Metrics.Fallback("idle_peer")
		log.Warn("a node did not deliver the pieces it has; not asking it again for this blob")
	case r.badPeer:
		l.nodes.banned[r.f.Peer] = true
		l.e.deps.Metrics.Fallback("bad_peer_data")
		log.Warn("a node sent pieces that failed their check; not asking it again for this blob")
	case r.err != nil:
		log.Debug("pieces from a node failed")
	}
}

func (l *loop) originDone(r fetchResult, alone bool) {
	o := &l.origin
	o.inFlight.RemoveRange(uint64(r.f.First), uint64(r.f.First+r.f.Count))
	urgent := r.f.Why == "range"
	if urgent {
		o.urgent--
	} else {
		o.busy--
		o.pieces -= r.f.Count
	}
	l.e.deps.Peers.Unclaim(pieceRange(r.f), r.err != nil)
	var se *StatusError
	if errors.As(r.err, &se) && se.Status == regshare.StatusTaken {
		// Another node fetched these as its share a moment ago (it sees
		// other nodes than this one while the swarm forms): they come
		// through the swarm. Not a failure of the registry.
		until := l.e.deps.Clock.Now().Add(regshare.Hold)
		for _, i := range pieceRange(r.f) {
			o.taken[uint32(i)] = until
		}
		l.e.deps.Log.WithField("pieces", r.f.Count).Debug("registry: another node fetched these pieces; leaving them to the swarm")
		return
	}
	if r.err == nil {
		o.failures = 0
		if alone && !urgent {
			// Still alone: likely to stay so; take more at once.
			o.run = max(2*o.run, 2*r.f.Count)
		}
		return
	}
	// The registry may be restarting; the stall watch decides when to
	// give up on pieces altogether.
	o.failures++
	o.pausedUntil = l.e.deps.Clock.Now().Add(time.Duration(min(o.failures, 10)) * 100 * time.Millisecond)
	l.e.deps.Log.WithError(r.err).Debug("pieces from the registry failed")
}

// pieceRange lists the pieces a fetch covers.
func pieceRange(f sched.Fetch) []int {
	pieces := make([]int, f.Count)
	for k := range pieces {
		pieces[k] = f.First + k
	}
	return pieces
}
