package swarm

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha1"
	"errors"
	"io"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/sched"
	"github.com/shoalproject/shoal/internal/regshare"
)

// The engine's tests run on a fake clock against fakes of its interfaces:
// a blob in memory, nodes that deliver, stay silent, trickle, refuse or
// lie, and a registry that answers or fails. Time moves only when the
// loop waits, so what the loop decides is checked against the clock it
// decided by.

const pieceLen = 16 << 10

// testBlob is a blob of n pieces (the last one short) and its layout.
func testBlob(t *testing.T, n int) ([]byte, Layout) {
	t.Helper()
	data := make([]byte, int64(n-1)*pieceLen+1000)
	rand.Read(data)
	lay := Layout{Length: int64(len(data)), PieceLength: pieceLen}
	for i := range n {
		off, k := lay.Piece(i)
		sum := sha1.Sum(data[off : off+k])
		lay.Hashes = append(lay.Hashes, sum[:]...)
	}
	return data, lay
}

// memBlob is a Blob in memory.
type memBlob struct {
	lay  Layout
	mu   sync.Mutex
	data []byte
	have map[int]bool
}

func newMemBlob(lay Layout) *memBlob {
	return &memBlob{lay: lay, data: make([]byte, lay.Length), have: map[int]bool{}}
}

func (b *memBlob) AppendPresent(dst []uint32) []uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i := range b.lay.NumPieces() {
		if b.have[i] {
			dst = append(dst, uint32(i))
		}
	}
	return dst
}

func (b *memBlob) Complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.have) == b.lay.NumPieces()
}

func (b *memBlob) Prefix() int64 { return 0 }

func (b *memBlob) WritePieceLent(i int, data []byte, _ bool, done func()) error {
	defer done()
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.have[i] {
		off, _ := b.lay.Piece(i)
		copy(b.data[off:], data)
		b.have[i] = true
	}
	return nil
}

// How a fake node answers requests for pieces.
type behaviour int

const (
	deliver behaviour = iota // the bytes, at once
	silent                   // nothing, until the request ends
	trickle                  // a byte per second
	busy                     // 503: no upload slot free
	liar                     // bytes that are not the pieces
)

type fakeNode struct {
	id  string
	has *roaring.Bitmap
	how behaviour
	// later are pieces it has from the clock's time at on.
	later *roaring.Bitmap
	at    time.Time
}

// fakePeers is a swarm of fake nodes.
type fakePeers struct {
	data    []byte
	clock   clockwork.Clock
	nodes   []fakeNode
	forming bool // connections never finish
	changed chan struct{}

	blocked atomic.Int64 // reads waiting on the clock or their request's end

	// hideClaims: the claims are of nodes this one is not connected to
	// (the registry knows of them; Claimed does not).
	hideClaims bool

	mu     sync.Mutex
	claims []time.Time // when each registry fetch started, by the engine's clock
	// onClaim, if set, sees each registry fetch's pieces.
	onClaim func(pieces []int)
	// claimed are pieces other nodes fetch from the registry (until a
	// node has them).
	claimed *roaring.Bitmap
	// reads are the requests to nodes: node and first byte.
	reads []nodeRead
}

type nodeRead struct {
	id  string
	off int64
}

func (p *fakePeers) Self() string { return "self" }

func (p *fakePeers) Nodes() []sched.Peer {
	var out []sched.Peer
	for _, n := range p.nodes {
		has := n.has.Clone()
		if n.later != nil && !p.clock.Now().Before(n.at) {
			has.Or(n.later)
		}
		out = append(out, sched.Peer{ID: n.id, Has: has, Data: true})
	}
	return out
}

func (p *fakePeers) Formation() (bool, bool) { return true, p.forming }
func (p *fakePeers) Claimed(time.Time, func(string) bool) *roaring.Bitmap {
	if p.claimed == nil || p.hideClaims {
		return roaring.New()
	}
	c := p.claimed.Clone()
	for _, n := range p.Nodes() {
		c.AndNot(n.Has)
	}
	return c
}
func (p *fakePeers) Claim(pieces []int) {
	p.mu.Lock()
	p.claims = append(p.claims, p.clock.Now())
	p.mu.Unlock()
	if p.onClaim != nil {
		p.onClaim(pieces) // on the loop's goroutine
	}
}
func (p *fakePeers) Unclaim([]int, bool)      {}
func (p *fakePeers) Arrived(int)              {}
func (p *fakePeers) Changed() <-chan struct{} { return p.changed }

func (p *fakePeers) firstClaim() (time.Time, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.claims) == 0 {
		return time.Time{}, false
	}
	return p.claims[0], true
}

func (p *fakePeers) ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error) {
	p.mu.Lock()
	p.reads = append(p.reads, nodeRead{id: id, off: off})
	p.mu.Unlock()
	for _, node := range p.nodes {
		if node.id != id {
			continue
		}
		switch node.how {
		case deliver:
			return io.NopCloser(bytes.NewReader(p.data[off : off+n])), nil
		case silent:
			return &trickleBody{ctx: ctx, blocked: &p.blocked}, nil
		case trickle:
			return &trickleBody{ctx: ctx, clock: p.clock, data: p.data[off : off+n], blocked: &p.blocked}, nil
		case busy:
			return nil, &StatusError{Status: 503, What: "no upload slot free"}
		case liar:
			return io.NopCloser(bytes.NewReader(make([]byte, n))), nil
		}
	}
	return nil, errors.New("no such node")
}

// trickleBody sends a byte of data per second of the clock; without a
// clock, nothing at all. It ends with its request.
type trickleBody struct {
	ctx     context.Context
	clock   clockwork.Clock
	data    []byte
	blocked *atomic.Int64
}

func (b *trickleBody) Read(p []byte) (int, error) {
	var tick <-chan time.Time
	if b.clock != nil && len(b.data) > 0 {
		tick = b.clock.After(time.Second)
	}
	b.blocked.Add(1)
	defer b.blocked.Add(-1)
	select {
	case <-b.ctx.Done():
		return 0, b.ctx.Err()
	case <-tick:
		p[0], b.data = b.data[0], b.data[1:]
		return 1, nil
	}
}

func (b *trickleBody) Close() error { return nil }

// fakeOrigin is the registry.
type fakeOrigin struct {
	data []byte
	fail bool
	// taken: share fetches are refused, another node fetched them
	// (regshare); refused counts them.
	taken   bool
	refused atomic.Int64
}

func (o *fakeOrigin) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if o.fail {
		return nil, &StatusError{Status: 500, What: "registry down"}
	}
	if o.taken && FetchWhy(ctx) == "share" {
		o.refused.Add(1)
		return nil, &StatusError{Status: regshare.StatusTaken, What: "taken"}
	}
	return io.NopCloser(bytes.NewReader(o.data[off : off+n])), nil
}

// countMetrics counts what the engine reports.
type countMetrics struct {
	mu        sync.Mutex
	fallbacks map[string]int
	registry  map[string]int
	useful    int
}

func (m *countMetrics) PeerBytes(_, useful int) {
	m.mu.Lock()
	m.useful += useful
	m.mu.Unlock()
}

func (m *countMetrics) RegistryBytes(why string, n int) {
	m.mu.Lock()
	m.registry[why] += n
	m.mu.Unlock()
}

func (m *countMetrics) Fallback(reason string) {
	m.mu.Lock()
	m.fallbacks[reason]++
	m.mu.Unlock()
}

// rig is one engine on a fake clock with its fakes.
type rig struct {
	t       *testing.T
	clock   *clockwork.FakeClock
	data    []byte
	blob    *memBlob
	peers   *fakePeers
	origin  *fakeOrigin
	metrics *countMetrics
	cfg     Config
	wants   *Wants
}

func newRig(t *testing.T, pieces int, nodes ...fakeNode) *rig {
	data, lay := testBlob(t, pieces)
	clock := clockwork.NewFakeClockAt(time.Unix(1_000_000, 0))
	return &rig{
		t: t, clock: clock, data: data, blob: newMemBlob(lay),
		peers:   &fakePeers{data: data, clock: clock, nodes: nodes, changed: make(chan struct{})},
		origin:  &fakeOrigin{data: data},
		metrics: &countMetrics{fallbacks: map[string]int{}, registry: map[string]int{}},
		cfg:     Config{Layout: lay, StallTimeout: 5 * time.Second, Deadline: 10 * time.Minute},
	}
}

// all is a bitmap of every piece of an n-piece blob.
func all(n int) *roaring.Bitmap {
	b := roaring.New()
	b.AddRange(0, uint64(n))
	return b
}

// step is how far the clock moves each time the loop waits: its tick
// after settling, so that every step wakes it.
const step = runTick

// run runs the engine until it returns or its clock has moved by limit.
// Each time the loop waits, the clock moves by step, but only once every
// fetch it started has reported back or waits on the clock itself (a
// silent or trickling node): time never runs ahead of a fetch that
// has work to do, however slow the machine.
func (r *rig) run(limit time.Duration) (Result, error) {
	r.t.Helper()
	return r.runBlob(r.blob, limit)
}

// runBlob is run with blob in place of r.blob (a wrapper of it).
func (r *rig) runBlob(blob Blob, limit time.Duration) (Result, error) {
	r.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lg := logrus.New()
	lg.SetOutput(io.Discard)
	e := New(r.cfg, Deps{Blob: blob, Peers: r.peers, Origin: r.origin, Metrics: r.metrics, Clock: r.clock, Log: logrus.NewEntry(lg), Wants: r.wants})
	start := r.clock.Now()
	e.idle = func(pending int, queued func() int) {
		for wait := time.Now().Add(5 * time.Second); queued() == 0 && r.peers.blocked.Load() < int64(pending) && time.Now().Before(wait); {
			time.Sleep(50 * time.Microsecond)
		}
		if queued() > 0 {
			return // the loop reads it first
		}
		if r.clock.Since(start) > limit {
			cancel()
			return
		}
		r.clock.Advance(step)
	}
	res, err := e.Run(ctx)
	if errors.Is(err, context.Canceled) {
		r.t.Fatalf("engine still running after %v of its clock (result %+v)", limit, res)
	}
	return res, err
}

func (r *rig) checkBlob() {
	r.t.Helper()
	if !r.blob.Complete() || !bytes.Equal(r.blob.data, r.data) {
		r.t.Fatal("blob incomplete or not the data")
	}
}

func TestEngineFromNodes(t *testing.T) {
	const n = 8
	r := newRig(t, n, fakeNode{id: "a", has: all(n)}, fakeNode{id: "b", has: all(n)})
	res, err := r.run(time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r.checkBlob()
	if res.FromPeers != int64(len(r.data)) || res.FromRegistry != 0 {
		t.Errorf("from peers %d, registry %d; want all %d from peers", res.FromPeers, res.FromRegistry, len(r.data))
	}
	if len(r.metrics.fallbacks) != 0 {
		t.Errorf("fallbacks %v on a healthy swarm", r.metrics.fallbacks)
	}
}

func TestEngineAlone(t *testing.T) {
	r := newRig(t, 40)
	res, err := r.run(time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r.checkBlob()
	if r.metrics.registry["alone"] != len(r.data) {
		t.Errorf("registry bytes %v, want all %d alone", r.metrics.registry, len(r.data))
	}
	// Runs double while alone: far fewer requests than pieces.
	if k := len(r.peers.claims); k >= 20 {
		t.Errorf("%d registry requests for 40 pieces alone", k)
	}
}

// A node that has nothing and fetches nothing (another node slow to start,
// or gone) owns part of the blob: after StealAfter of idling, this node
// takes those pieces from the registry itself, one at a time, without
// calling it a stall.
func TestEngineSteals(t *testing.T) {
	const n = 8
	r := newRig(t, n, fakeNode{id: "a", has: roaring.New()})
	res, err := r.run(time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r.checkBlob()
	if r.metrics.registry["share"] == 0 || r.metrics.registry["steal"] == 0 {
		t.Errorf("registry bytes %v: want both share and steal", r.metrics.registry)
	}
	if r.metrics.fallbacks["solo"] != 0 {
		t.Errorf("stealing went solo: %v", r.metrics.fallbacks)
	}
}

// No livelock (issue 20): nodes that connect and advertise every piece
// but deliver nothing useful — silent, a byte at a time, always busy — or connections that never finish forming must not hold a blob
// for longer than the stall bound: by then this node fetches from the
// registry, its share first, whatever its connections look like.
func TestEngineStallGoesToRegistryWithinBound(t *testing.T) {
	const n = 16
	tests := []struct {
		name    string
		how     behaviour
		forming bool
		nodes   int
	}{
		{name: "silent nodes", how: silent, nodes: 3},
		{name: "trickling nodes", how: trickle, nodes: 3},
		{name: "busy nodes", how: busy, nodes: 3},
		{name: "connections never formed", forming: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var nodes []fakeNode
			for i := range tt.nodes {
				nodes = append(nodes, fakeNode{id: string(rune('a' + i)), has: all(n), how: tt.how})
			}
			r := newRig(t, n, nodes...)
			r.peers.forming = tt.forming
			start := r.clock.Now()
			// 1 MiB/s assumed, 16 KiB pieces: the bound is the floor.
			bound := sched.StallBound(pieceLen, DefaultAssumedRate, r.cfg.StallTimeout)
			if bound != r.cfg.StallTimeout {
				t.Fatalf("bound %v, want the floor %v", bound, r.cfg.StallTimeout)
			}
			res, err := r.run(2 * time.Minute)
			if err != nil || res.Reason != "" {
				t.Fatalf("Run = %+v, %v", res, err)
			}
			r.checkBlob()
			first, ok := r.peers.firstClaim()
			if !ok {
				t.Fatal("no registry fetch")
			}
			// Settling takes at most settleLimit; the watch looks every
			// runTick.
			if late := first.Sub(start); late > settleLimit+bound+runTick+step {
				t.Errorf("first registry fetch after %v, want within %v", late, settleLimit+bound+runTick+step)
			}
			if r.metrics.fallbacks["solo"] != 1 {
				t.Errorf("fallbacks %v, want solo once", r.metrics.fallbacks)
			}
			if res.FromRegistry != int64(len(r.data)) {
				t.Errorf("%d bytes from the registry, want all %d", res.FromRegistry, len(r.data))
			}
		})
	}
}

// A swarm whose first pieces all come from a slow registry (issue 20)
// is not stalled: while a connected node has claimed pieces missing
// here, the stall clock holds, for up to sched.MaxStallBound; claims that
// never turn into pieces then go solo as any stall does.
func TestEngineWaitsForClaimedPieces(t *testing.T) {
	const n = 16
	tests := []struct {
		name   string
		arrive time.Duration // 0: never
	}{
		{"claimed pieces arrive after four stall bounds", 20 * time.Second},
		{"claimed pieces never arrive", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Unix(1_000_000, 0) // newRig's clock
			a := fakeNode{id: "a", has: roaring.New()}
			if tt.arrive > 0 {
				a.later, a.at = all(n), start.Add(tt.arrive)
			}
			r := newRig(t, n, a)
			r.peers.claimed = all(n)
			if !r.clock.Now().Equal(start) {
				t.Fatalf("rig clock at %v, want %v", r.clock.Now(), start)
			}
			res, err := r.run(5 * time.Minute)
			if err != nil || res.Reason != "" {
				t.Fatalf("Run = %+v, %v", res, err)
			}
			r.checkBlob()
			first, fetched := r.peers.firstClaim()
			if tt.arrive > 0 {
				if fetched || r.metrics.fallbacks["solo"] != 0 || res.FromPeers != int64(len(r.data)) {
					t.Errorf("went to the registry (%v, fallbacks %v, %d bytes from nodes) while its pieces were claimed and on their way", fetched, r.metrics.fallbacks, res.FromPeers)
				}
				return
			}
			if !fetched || r.metrics.fallbacks["solo"] != 1 {
				t.Fatalf("fallbacks %v, registry fetch %v: want solo once", r.metrics.fallbacks, fetched)
			}
			// Held for MaxStallBound, then one stall bound as always.
			bound := sched.StallBound(pieceLen, DefaultAssumedRate, r.cfg.StallTimeout)
			if late, within := first.Sub(start), settleLimit+sched.MaxStallBound+bound+runTick+step; late < sched.MaxStallBound || late > within {
				t.Errorf("solo after %v, want after the claims held %v (and within %v)", late, sched.MaxStallBound, within)
			}
		})
	}
}

// A share the registry refuses because another node (one this node does
// not see yet) fetched it a moment ago is left to the swarm: no solo, no
// pause, the pieces come from the node that gets them.
func TestEngineShareTakenElsewhere(t *testing.T) {
	const n = 16
	r := newRig(t, n, fakeNode{id: "a", has: roaring.New(), later: all(n), at: time.Unix(1_000_000, 0).Add(10 * time.Second)})
	r.origin.taken = true
	r.peers.claimed, r.peers.hideClaims = all(n), true
	res, err := r.run(5 * time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r.checkBlob()
	if r.origin.refused.Load() == 0 {
		t.Fatal("no share fetch was refused: the test tests nothing")
	}
	if r.metrics.fallbacks["solo"] != 0 || res.FromRegistry != 0 || res.FromPeers != int64(len(r.data)) {
		t.Errorf("fallbacks %v, %d bytes from the registry, %d from nodes: want every piece from the node, no solo", r.metrics.fallbacks, res.FromRegistry, res.FromPeers)
	}
}

// The registry's share comes first when stalled: with a node that
// advertises everything and sends nothing, the first solo fetch is of
// this node's own share.
func TestEngineStallShareFirst(t *testing.T) {
	const n = 16
	r := newRig(t, n, fakeNode{id: "a", has: all(n), how: silent})
	var first []int
	r.peers.onClaim = func(pieces []int) {
		if first == nil {
			first = pieces
		}
	}
	if res, err := r.run(2 * time.Minute); err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	ids := []string{"self", "a"}
	for _, i := range first {
		if sched.Owner(i/sched.BlockSize(n, sched.DefaultLimits), ids) != "self" {
			t.Fatalf("first solo fetch %v includes piece %d of a's share", first, i)
		}
	}
}

// When nothing helps — nodes silent, the registry failing — the swarm path
// gives up after a second bound in solo, long before the deadline, and
// plain HTTP takes over; the deadline ends it sooner when it is shorter.
func TestEngineGivesUp(t *testing.T) {
	tests := []struct {
		name     string
		deadline time.Duration
		reason   string
		within   time.Duration
	}{
		{"stall", 10 * time.Minute, "stall", settleLimit + 2*5*time.Second + time.Second},
		{"deadline", 3 * time.Second, "deadline", 3*time.Second + time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRig(t, 8, fakeNode{id: "a", has: all(8), how: silent})
			r.origin.fail = true
			r.cfg.Deadline = tt.deadline
			start := r.clock.Now()
			res, err := r.run(time.Minute)
			if err != nil || res.Reason != tt.reason {
				t.Fatalf("Run = %+v, %v; want reason %q", res, err, tt.reason)
			}
			if took := r.clock.Since(start); took > tt.within {
				t.Errorf("gave up after %v, want within %v", took, tt.within)
			}
		})
	}
}

// A node that sends bytes failing their check is not asked again.
func TestEngineBansLiar(t *testing.T) {
	const n = 8
	r := newRig(t, n, fakeNode{id: "a", has: all(n), how: liar}, fakeNode{id: "b", has: all(n)})
	r.cfg.Strict = true
	res, err := r.run(time.Minute)
	if err != nil || res.Reason != "" {
		t.Fatalf("Run = %+v, %v", res, err)
	}
	r.checkBlob()
	if r.metrics.fallbacks["bad_peer_data"] != 1 {
		t.Errorf("fallbacks %v, want bad_peer_data once", r.metrics.fallbacks)
	}
}

// The loop's tick follows the piece-time: ticksPerPiece per piece at the
// rate the blob arrives at, within [runTick, maxRunTick].
func TestLoopPace(t *testing.T) {
	tests := []struct {
		rate float64 // bytes/s
		want time.Duration
	}{
		{100 << 20, runTick},              // a LAN: a piece in 10 ms
		{1 << 20, 125 * time.Millisecond}, // a piece a second
		{300 << 10, maxRunTick},           // 10 Mbit/s over four layers
	}
	for _, tt := range tests {
		e := New(Config{Layout: Layout{Length: 64 << 20, PieceLength: 1 << 20}}, Deps{Clock: clockwork.NewFakeClock()})
		l := newLoop(e)
		l.tick = e.deps.Clock.NewTicker(settleTick)
		l.phase.settled, l.period, l.watch.rate = true, runTick, tt.rate
		l.pace()
		if l.period != tt.want {
			t.Errorf("rate %.0f B/s: tick %v, want %v", tt.rate, l.period, tt.want)
		}
	}
}

// Which registry fetches the registry may refuse as already on their way
// through the swarm (regshare): shares and steals, never a stalled node's,
// a lone node's or a waiting reader's.
func TestMarkedShare(t *testing.T) {
	for why, want := range map[string]bool{"share": true, "steal": true, "solo": false, "alone": false, "range": false, "": false} {
		if got := MarkedShare(context.WithValue(context.Background(), whyKey{}, why)); got != want {
			t.Errorf("%q: marked %v, want %v", why, got, want)
		}
	}
}
