package main

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"net/netip"
	"os"
	"slices"
	"time"

	"github.com/RoaringBitmap/roaring/v2"

	"github.com/shoalproject/shoal/agent/sched"
	"github.com/shoalproject/shoal/tracker"
)

// Params describe one simulated rollout: the image, the network, the
// agent's and tracker's settings, and the faults.
type Params struct {
	Name     string
	N        int
	Image    int64 // bytes of all layers
	Layers   int   // the image's layers, equal sizes, pulled concurrently
	PieceLen int64 // the registry's torrent piece length (driver.DefaultPieceLength)

	// Links in bytes per second on the wire; Efficiency is the share of
	// it that is payload (TCP/IP and Ethernet framing: 1448 of 1514
	// bytes per full frame).
	Up, Down, RegistryUp float64
	Efficiency           float64
	// HostCPU, when > 0, is one budget in payload bytes per second that
	// every node-to-node flow crosses: the e2e runs put all agents on one
	// 2-core host, where TLS, SHA-1 and the kernel's veth work bind before
	// the links do. Off for projections (every node has its own CPU).
	HostCPU float64

	RTT       float64 // round trip between any two hosts, seconds
	ReqProc   float64 // an HTTP request's processing, client and server
	ConnSetup float64 // a peer connection's TLS and BitTorrent handshakes, beyond RTTs
	// StartOverhead is a pull's time before its layers' torrents are
	// added (manifest, config, HEAD, torrent metadata through the mirror);
	// FinishOverhead after the last piece (digest, commit, client read).
	StartOverhead, FinishOverhead float64
	// SendBuffer: a data-server handler (and its upload slot) is done
	// once the rest of its response fits in the socket's send buffer,
	// before the receiver has it (Linux autotunes tcp_wmem up to 4 MiB).
	SendBuffer float64
	// NoShareDedupe: the registry serves every share fetch (before
	// internal/regshare).
	NoShareDedupe bool

	// JoinSpread: node i starts its pull at i/N × JoinSpread.
	JoinSpread float64
	// Slow nodes get SlowFactor of the link; Dead nodes stop at DeadAt
	// (their agent is killed: connections close, transfers abort).
	Slow       []int
	SlowFactor float64
	Dead       []int
	DeadAt     float64

	Limits       sched.Limits
	UploadSlots  int     // agent p2p.uploadSlots
	StallTimeout float64 // agent p2p.stallTimeout (e2e: 5 s)
	Deadline     float64 // agent p2p.deadline
	MaxConns     int     // anacrolix EstablishedConnsPerTorrent (agent.go: 100)
	HalfOpen     int     // anacrolix HalfOpenConnsPerTorrent (default 25)
	Numwant      int     // anacrolix asks 200 while it wants peers
	MaxNumwant   int     // tracker maxNumwant
	Group        string  // node group (e2e: "e2e")
	Interval     float64 // tracker interval
	PeerTTL      float64 // tracker peerTTL

	// Unfairness is the spread (lognormal sigma) of TCP flows' shares of
	// a bottleneck: 0 is the fluid ideal, where flows started together
	// end together.
	Unfairness float64
	// UnfairPeriod is how often flows' weights are drawn anew (0: never).
	UnfairPeriod float64
	// Engine variants, for what-if runs of changes to agent/swarm.go (the
	// defaults are today's engine): PokeOnHave wakes the run loop when a
	// connected node announces a piece this one lacks, instead of at the
	// next 50 ms tick; BusyBackoff replaces peerBusyBackoff.
	PokeOnHave  bool
	BusyBackoff float64
	// StealUnmarked: what-if steals did not carry regshare.Header, as
	// before the agent marked them (swarm.MarkedShare): the registry then
	// serves every steal, also of a range another node fetched within
	// regshare.Hold.
	StealUnmarked bool
	// Quantum bounds how often flow rates are recomputed (0: on every
	// change).
	Quantum float64
	Seed    uint64
	// Limit stops the run (simulated seconds).
	Limit float64
}

// Agent and tracker constants the model copies, with where they live.
const (
	settleLimit      = 1.0   // agent/swarm.go settleLimit
	settleGrace      = 0.100 // agent/swarm/loop.go settleGrace (runs while the view is unchanged)
	tickUnsettled    = 0.005 // agent/swarm.go run: time.NewTicker(5ms)
	tickSettled      = 0.050 // agent/swarm.go run: tick.Reset(50ms)
	peerBusyBackoff  = 0.150 // agent/swarm.go peerBusyBackoff
	idleReadTimeout  = 30.0  // agent/swarm.go idleReadTimeout
	claimTTL         = 30.0  // agent/swarm.go claimTTL (not modelled: claims end with their fetch)
	originPauseStep  = 0.100 // agent/swarm.go run: originPausedUntil
	originPauseSteps = 10
)

// DefaultParams are the e2e cluster's settings (e2e/cluster_test.go,
// agent/config.go, tracker/config.go, anacrolix defaults as agent.go sets
// them) on a 200 Mbit/s netns link.
func DefaultParams() Params {
	return Params{
		Name: "rollout", N: 8, Image: 64 << 20, Layers: 4, PieceLen: 1 << 20,
		Up: mbit(200), Down: mbit(200), RegistryUp: mbit(200), Efficiency: 1448.0 / 1514.0,
		RTT: 0.0002, ReqProc: 0.001, ConnSetup: 0.005,
		StartOverhead: 0.010, FinishOverhead: 0.010,
		SlowFactor: 0.1, DeadAt: math.Inf(1),
		Limits: sched.DefaultLimits, UploadSlots: 4, StallTimeout: 5, Deadline: 600,
		MaxConns: 100, HalfOpen: 25, Numwant: 200, MaxNumwant: 200, Group: "e2e",
		Interval: 10, PeerTTL: 180,
		BusyBackoff: peerBusyBackoff, SendBuffer: 1 << 20, Unfairness: 2, Seed: 1, Limit: 3600,
	}
}

func mbit(m float64) float64 { return m * 1e6 / 8 }

// Result is one run's outcome.
type Result struct {
	Params        Params           `json:"-"`
	Name          string           `json:"name"`
	N             int              `json:"nodes"`
	ImageBytes    int64            `json:"imageBytes"`
	Seconds       []float64        `json:"seconds"` // per finished node, from its join
	Unfinished    int              `json:"unfinished"`
	P50           float64          `json:"p50"`
	P99           float64          `json:"p99"`
	P999          float64          `json:"p999"`
	Max           float64          `json:"max"`
	TStar         float64          `json:"tStar"`
	RegistryBytes int64            `json:"registryBytes"`
	Egress        float64          `json:"egressPerImage"`
	PeerBytes     int64            `json:"peerBytes"`
	OriginWhy     map[string]int64 `json:"registryBytesByRule"`
	Fallbacks     map[string]int   `json:"fallbacks"`
	Refused       int64            `json:"busyAnswers"`   // 503s: upload slots full
	ShareRefusals int64            `json:"shareRefusals"` // 409s: share taken (regshare)
	Events        uint64           `json:"events"`
	Plans         uint64           `json:"plans"`
	Recomputes    int              `json:"rateRecomputes"`
	WallSeconds   float64          `json:"wallSeconds"`
}

// world is one rollout in progress.
type world struct {
	p     Params
	sim   *sim
	net   *network
	rng   *rand.Rand
	store *tracker.MemoryStore
	// handRng orders the tracker's hand-out (tracker.HandOutRequest.Rand).
	handRng *rand.Rand
	base    time.Time

	nodes    []*node
	registry *node
	cpu      *resource
	blobs    []*blob

	finished int
	res      Result
}

type blob struct {
	idx    int
	ih     [20]byte
	size   int64
	pieces int
	// shares: the registry's share log for this blob, by first piece.
	shares map[int]shareRec
}

// shareRec is the registry's record of a share fetch (registry/sharelog.go).
type shareRec struct {
	by *node
	at float64
}

// shareHold is internal/regshare.Hold in seconds.
const shareHold = 30.0

func (b *blob) pieceBytes(i int, plen int64) int64 {
	if i == b.pieces-1 {
		return b.size - int64(i)*plen
	}
	return plen
}

type node struct {
	w       *world
	idx     int
	id      string
	id20    [20]byte
	addr    netip.AddrPort
	up      *resource
	down    *resource
	joinAt  float64
	dead    bool
	uploads int // upload slots taken (agent-wide: agent.go uploadSlots)
	inFlows int // flows arriving here
	lastRx  float64
	blobs   []*nodeBlob
	done    int
	doneAt  float64
}

// nodeBlob is one node's download of one layer: the state
// agent/swarm.go's run loop owns, plus the torrent's connections.
type nodeBlob struct {
	n *node
	b *blob
	// taken: share pieces the registry refused (another node fetched
	// them within shareHold), until when they count as claimed.
	taken map[int]float64

	started, complete bool
	start, doneAt     float64
	have, inFlight    *roaring.Bitmap
	mine              *roaring.Bitmap // this node's registry pieces in flight (its claims)

	conns    []*conn
	byID     map[string]*conn
	pending  []*nodeBlob // named by the tracker, not dialed yet
	known    map[*nodeBlob]bool
	halfOpen int

	originSeen, answered bool
	settled              bool
	settledAt, readyAt   float64
	readyConns           int // connections when readyAt was set

	originBusy, originPieces, originFailures int
	originPausedUntil                        float64
	aloneRun                                 int
	idleSince                                time.Time
	solo, http                               bool
	lastProgress, lastCheck                  float64

	wakeAt  float64
	wakeVer int
	peerBuf []sched.Peer
}

type conn struct {
	peer    *nodeBlob
	other   *conn
	busy    int
	backoff float64
	banned  bool
	closed  bool
}

func newWorld(p Params) *world {
	w := &world{p: p, sim: &sim{}, rng: rand.New(rand.NewPCG(p.Seed, 0x5eed)), base: time.Unix(1_700_000_000, 0)}
	w.sim.rng = rand.New(rand.NewPCG(p.Seed, 0xf10))
	w.net = &network{sim: w.sim, quantum: p.Quantum, sigma: p.Unfairness, period: p.UnfairPeriod}
	// The tracker's own randomness (store sample, hand-out order) is seeded
	// too, so a seed names one run.
	w.store = tracker.NewSeededMemoryStore(24*time.Hour, p.Seed)
	w.handRng = rand.New(rand.NewPCG(p.Seed, 0x7ac))
	eff := p.Efficiency
	w.registry = &node{w: w, idx: -1, up: &resource{name: "registry.up", cap: p.RegistryUp * eff}}
	if p.HostCPU > 0 {
		w.cpu = &resource{name: "hostcpu", cap: p.HostCPU}
	}
	per := p.Image / int64(p.Layers)
	for l := 0; l < p.Layers; l++ {
		b := &blob{idx: l, size: per, pieces: int((per + p.PieceLen - 1) / p.PieceLen)}
		for i := range b.ih {
			b.ih[i] = byte(w.rng.Uint32())
		}
		w.blobs = append(w.blobs, b)
		// The registry's seeder is in every swarm from the push on.
		var oid [20]byte
		copy(oid[:], "-SO0001-origin000000")
		_, _ = w.store.Announce(context.Background(), w.base, tracker.AnnounceInput{InfoHash: b.ih,
			Peer: tracker.Peer{ID: oid, Addr: netip.MustParseAddrPort("10.0.0.1:6881"), Class: tracker.ClassOrigin},
			TTL:  time.Duration(24 * time.Hour)})
	}
	slow := map[int]bool{}
	for _, i := range p.Slow {
		slow[i] = true
	}
	for i := 0; i < p.N; i++ {
		n := &node{w: w, idx: i}
		var id [20]byte
		copy(id[:], "-SN0001-")
		for k := 8; k < 20; k++ {
			id[k] = byte(w.rng.Uint32())
		}
		n.id20, n.id = id, string(id[:])
		n.addr = netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(1 + i>>16), byte(i >> 8), byte(i)}), 6881)
		f := 1.0
		if slow[i] {
			f = p.SlowFactor
		}
		n.up = &resource{name: fmt.Sprintf("n%d.up", i), cap: p.Up * eff * f}
		n.down = &resource{name: fmt.Sprintf("n%d.down", i), cap: p.Down * eff * f}
		if p.N > 1 {
			n.joinAt = float64(i) / float64(p.N) * p.JoinSpread
		}
		for _, b := range w.blobs {
			nb := &nodeBlob{n: n, b: b, have: roaring.New(), inFlight: roaring.New(), mine: roaring.New(),
				byID: map[string]*conn{}, known: map[*nodeBlob]bool{}, wakeAt: math.Inf(1), readyAt: -1}
			n.blobs = append(n.blobs, nb)
		}
		w.nodes = append(w.nodes, n)
		w.sim.at(n.joinAt, n.join)
	}
	for _, i := range p.Dead {
		n := w.nodes[i]
		w.sim.at(p.DeadAt, n.kill)
	}
	return w
}

func (w *world) t(sec float64) time.Time {
	return w.base.Add(time.Duration(sec * float64(time.Second)))
}

// run simulates until every live node finished or the limit.
func (w *world) run() Result {
	wall := time.Now()
	alive := w.p.N - len(w.p.Dead)
	w.sim.run(w.p.Limit, func() bool { return w.finished >= alive })
	w.store.Close()
	r := &w.res
	r.Params, r.Name, r.N, r.ImageBytes = w.p, w.p.Name, w.p.N, w.p.Image
	for _, n := range w.nodes {
		if n.dead {
			continue
		}
		if n.done == len(n.blobs) {
			r.Seconds = append(r.Seconds, n.doneAt-n.joinAt)
		} else {
			r.Unfinished++
		}
	}
	slices.Sort(r.Seconds)
	r.P50, r.P99, r.P999, r.Max = quantile(r.Seconds, 0.5), quantile(r.Seconds, 0.99), quantile(r.Seconds, 0.999), quantile(r.Seconds, 1)
	r.TStar = TStar(w.p)
	r.Egress = float64(r.RegistryBytes) / float64(w.p.Image)
	r.Events = w.sim.events
	r.Recomputes = w.net.recomputes
	r.WallSeconds = time.Since(wall).Seconds()
	return *r
}

// quantile is the nearest-rank quantile of sorted xs.
func quantile(xs []float64, q float64) float64 {
	if len(xs) == 0 {
		return math.NaN()
	}
	k := int(math.Ceil(q*float64(len(xs)))) - 1
	return xs[min(max(k, 0), len(xs)-1)]
}

// TStar is the rollout's lower bound (Kumar & Ross 2006, as e2e reports
// it): every node must receive F at its downlink, the registry must send
// F once, and all N copies must leave some uplink — the registry's and
// the nodes' together: max(F/u_s, F/d, N·F/(u_s + N·u)), on wire rates.
func TStar(p Params) float64 {
	f := float64(p.Image)
	return max(f/p.RegistryUp, f/p.Down, float64(p.N)*f/(p.RegistryUp+float64(p.N)*p.Up))
}

func (n *node) join() {
	w := n.w
	w.sim.at(w.sim.now+w.p.StartOverhead, func() {
		for _, nb := range n.blobs {
			nb.begin()
		}
	})
}

// begin adds the torrent (agent/download.go viaTorrent) and announces.
func (nb *nodeBlob) begin() {
	if nb.n.dead {
		return
	}
	w := nb.n.w
	nb.started, nb.start, nb.lastProgress = true, w.sim.now, w.sim.now
	w.sim.at(w.sim.now+w.p.RTT+w.p.ReqProc, func() { nb.announce(tracker.ClassIncomplete, true) })
	nb.poke()
}

// announce is anacrolix's announce to the tracker, answered by the real
// MemoryStore.Announce and hand-out policy (tracker/server.go
// TrackAnnounce + GetPeers: numwant, ×4 sample with a group, selectPeers).
func (nb *nodeBlob) announce(class tracker.Class, again bool) {
	n := nb.n
	w := n.w
	if n.dead {
		return
	}
	numwant := min(w.p.Numwant, w.p.MaxNumwant)
	sample := numwant
	if w.p.Group != "" {
		sample *= 4
	}
	sw, err := w.store.Announce(context.Background(), w.t(w.sim.now), tracker.AnnounceInput{InfoHash: nb.b.ih,
		Peer: tracker.Peer{ID: n.id20, Addr: n.addr, Class: class, Group: w.p.Group},
		TTL:  time.Duration(w.p.PeerTTL * float64(time.Second)), Sample: sample, Completed: class == tracker.ClassComplete})
	if err != nil {
		panic(err)
	}
	sel := tracker.HandOut(sw.Candidates, tracker.HandOutRequest{SelfID: n.id20, SelfAddr: n.addr, Group: w.p.Group, Limit: numwant, Young: tracker.YoungSwarm(sw, tracker.DefaultConfig().YoungSwarmSeeders), MaxPerIP: tracker.DefaultConfig().MaxPeersPerIP, Rand: w.handRng})
	nb.answered = true
	for _, p := range sel {
		if p.Class == tracker.ClassOrigin {
			if !nb.originSeen && !nb.known[nil] {
				nb.known[nil] = true
				nb.pending = append(nb.pending, nil) // nil: the registry's seeder
			}
			continue
		}
		i := nodeIndex(p.Addr)
		q := w.nodes[i].blobs[nb.b.idx]
		if nb.known[q] || nb.byID[q.n.id] != nil {
			continue
		}
		nb.known[q] = true
		nb.pending = append(nb.pending, q)
	}
	nb.dial()
	nb.poke()
	if again {
		w.sim.at(w.sim.now+w.p.Interval, func() {
			if !nb.complete {
				nb.announce(tracker.ClassIncomplete, true)
			}
		})
	}
}

func nodeIndex(a netip.AddrPort) int {
	b := a.Addr().As4()
	return int(b[1]-1)<<16 | int(b[2])<<8 | int(b[3])
}

// dial opens connections to pending peers, HalfOpen at a time, up to
// MaxConns (anacrolix: HalfOpenConnsPerTorrent, EstablishedConnsPerTorrent,
// peers dialed in an order of their own: here random).
func (nb *nodeBlob) dial() {
	w := nb.n.w
	for len(nb.pending) > 0 && nb.halfOpen < w.p.HalfOpen && len(nb.conns)+nb.halfOpen < w.p.MaxConns {
		k := w.rng.IntN(len(nb.pending))
		q := nb.pending[k]
		nb.pending[k] = nb.pending[len(nb.pending)-1]
		nb.pending = nb.pending[:len(nb.pending)-1]
		nb.halfOpen++
		w.sim.at(w.sim.now+2*w.p.RTT+w.p.ConnSetup, func() {
			nb.halfOpen--
			if nb.n.dead {
				return
			}
			switch {
			case q == nil:
				// The registry's seeder: agent.go closes it at once and
				// notes that the tracker answered.
				nb.originSeen = true
			case !q.n.dead && q.started && nb.byID[q.n.id] == nil && q.byID[nb.n.id] == nil && len(q.conns) < w.p.MaxConns && len(nb.conns) < w.p.MaxConns:
				nb.connect(q)
			}
			nb.dial()
			nb.poke()
		})
	}
}

func (nb *nodeBlob) connect(q *nodeBlob) {
	a := &conn{peer: q}
	b := &conn{peer: nb, other: a}
	a.other = b
	nb.conns = append(nb.conns, a)
	nb.byID[q.n.id] = a
	q.conns = append(q.conns, b)
	q.byID[nb.n.id] = b
	q.known[nb] = true
	q.poke()
}

func (nb *nodeBlob) dropConn(c *conn) {
	c.closed = true
	if i := slices.Index(nb.conns, c); i >= 0 {
		nb.conns = slices.Delete(nb.conns, i, i+1)
	}
	delete(nb.byID, c.peer.n.id)
	nb.poke()
}

// poke is swarmDownload.poke: the run loop goes round now.
func (nb *nodeBlob) poke() { nb.wake(nb.n.w.sim.now) }

// tickWake: the run loop notices at its next tick (a neighbour's have,
// a backoff ending, the idle and stall clocks).
func (nb *nodeBlob) tickWake(t float64) {
	g0, period := nb.start, tickUnsettled
	if nb.settled {
		g0, period = nb.settledAt, tickSettled
	}
	if t > g0 {
		t = g0 + math.Ceil((t-g0)/period-1e-9)*period
	}
	nb.wake(t)
}

func (nb *nodeBlob) wake(t float64) {
	if nb.complete || !nb.started || nb.n.dead {
		return
	}
	w := nb.n.w
	if t < w.sim.now {
		t = w.sim.now
	}
	if nb.wakeAt <= t && nb.wakeAt >= w.sim.now {
		return // an earlier go-round is due; it re-arms the later ones
	}
	nb.wakeAt = t
	nb.wakeVer++
	v := nb.wakeVer
	w.sim.at(t, func() {
		if v != nb.wakeVer {
			return
		}
		nb.wakeAt = math.Inf(1)
		nb.step()
	})
}

// settledNow is swarmDownload.settled.
func (nb *nodeBlob) settledNow(now float64) bool {
	if now-nb.start >= settleLimit {
		return true
	}
	total := len(nb.conns) + len(nb.pending) + nb.halfOpen
	// agent/internal/peer Swarm.Formation: pending peers beyond the
	// connection cap are not connections being made.
	forming := nb.halfOpen > 0 || (len(nb.pending) > 0 && len(nb.conns) < nb.n.w.p.MaxConns)
	if !(total > 0 || nb.originSeen) || forming {
		nb.readyAt = -1
		return false
	}
	if len(nb.conns) == 0 {
		return true
	}
	if nb.readyAt < 0 || nb.readyConns != len(nb.conns) {
		nb.readyAt, nb.readyConns = now, len(nb.conns)
	}
	return now-nb.readyAt >= settleGrace
}

// step is one go-round of swarmDownload.run: the stall watch for what
// happened since the last one, the settle check, a snapshot, sched.Plan,
// and starting what it returns.
func (nb *nodeBlob) step() {
	if nb.complete || nb.http || nb.n.dead {
		return
	}
	n := nb.n
	w := n.w
	p := &w.p
	now := w.sim.now
	if n.inFlows > 0 || n.lastRx > nb.lastCheck {
		nb.lastProgress = now
	}
	nb.lastCheck = now
	if nb.settled {
		// The engine's rule since the split counts whole pieces (lastPiece)
		// and, in solo, registry bytes (lastOrigin); the model still feeds
		// both from its byte-level progress clock (see README, "Not yet
		// modelled").
		switch sched.Watch(w.t(now), w.t(nb.start), w.t(nb.lastProgress), w.t(nb.lastProgress), nb.solo,
			time.Duration(p.StallTimeout*float64(time.Second)), time.Duration(p.Deadline*float64(time.Second))) {
		case sched.GoSolo:
			nb.solo, nb.lastProgress = true, now
			w.fallback("solo")
		case sched.GiveUp:
			reason := "stall"
			if now-nb.start > p.Deadline {
				reason = "deadline"
			}
			w.fallback(reason)
			nb.viaHTTP()
			return
		}
	}
	if !nb.settled && nb.settledNow(now) {
		nb.settled, nb.settledAt, nb.lastProgress = true, now, now
	}

	snap := sched.Snapshot{Now: w.t(now), NumPieces: nb.b.pieces, Self: n.id, Have: nb.have, InFlight: nb.inFlight,
		OriginState: sched.OriginState{OriginBusy: nb.originBusy, OriginPieces: nb.originPieces}, Claimed: roaring.New(),
		Phase: sched.Phase{Settled: nb.settled, Solo: nb.solo, IdleSince: nb.idleSince}}
	peers := nb.peerBuf[:0]
	off := 0
	if len(nb.conns) > 0 {
		off = w.rng.IntN(len(nb.conns)) // PeerConns() is a map: no fixed order
	}
	for k := range nb.conns {
		c := nb.conns[(k+off)%len(nb.conns)]
		if c.banned {
			continue
		}
		busy := c.busy
		if now < c.backoff {
			busy = p.Limits.PerPeer
		}
		peers = append(peers, sched.Peer{ID: c.peer.n.id, Has: c.peer.have, Data: true, Busy: busy})
		if !c.peer.mine.IsEmpty() {
			snap.Claimed.Or(c.peer.mine)
		}
	}
	for i, until := range nb.taken {
		if now >= until {
			delete(nb.taken, i)
			continue
		}
		snap.Claimed.Add(uint32(i))
	}
	nb.peerBuf = peers
	snap.Peers = peers
	if len(peers) > 0 {
		nb.aloneRun = 0
	} else if nb.settled {
		snap.Forming = len(nb.pending)+nb.halfOpen > 0
	}
	snap.AloneRun = nb.aloneRun
	w.res.Plans++
	plan, idle := sched.Plan(snap, p.Limits)
	nb.idleSince = idle
	for _, f := range plan {
		if f.Origin() && now < nb.originPausedUntil {
			continue
		}
		nb.inFlight.AddRange(uint64(f.First), uint64(f.First+f.Count))
		if f.Origin() {
			nb.fetchOrigin(f)
		} else {
			nb.fetchPeer(f, nb.byID[f.Peer])
		}
	}
	nb.arm(len(peers))
}

// arm schedules the next go-round the clock alone would cause.
func (nb *nodeBlob) arm(npeers int) {
	w := nb.n.w
	p := &w.p
	now := w.sim.now
	next := math.Inf(1)
	if !nb.settled {
		next = nb.start + settleLimit
		if nb.readyAt >= 0 {
			next = min(next, nb.readyAt+settleGrace)
		}
		nb.tickWake(next)
		return
	}
	if !nb.idleSince.IsZero() {
		rank, _ := sched.Rank(nb.n.id, nb.peerBuf[:npeers])
		at := nb.idleSince.Sub(w.base).Seconds() + (p.Limits.StealAfter + time.Duration(rank)*p.Limits.StealStagger).Seconds()
		next = min(next, at)
	}
	for _, c := range nb.conns {
		if c.backoff > now {
			next = min(next, c.backoff)
		}
	}
	if nb.originPausedUntil > now {
		next = min(next, nb.originPausedUntil)
	}
	if nb.originBusy == 0 {
		next = min(next, nb.lastProgress+p.StallTimeout+1e-6)
	}
	next = min(next, nb.start+p.Deadline+1e-6)
	if !math.IsInf(next, 1) {
		nb.tickWake(next)
	}
}

// fetchPeer is swarmDownload.fetchPeer against the node's data server
// (agent/dataserver.go handlePieces: a free upload slot or 503).
func (nb *nodeBlob) fetchPeer(f sched.Fetch, c *conn) {
	w := nb.n.w
	p := &w.p
	c.busy++
	q := c.peer
	up := q.n
	w.sim.at(w.sim.now+p.RTT/2+p.ReqProc, func() {
		if c.closed || up.dead || nb.n.dead {
			w.sim.at(w.sim.now+p.RTT/2, func() { nb.peerResult(f, c, errGone) })
			return
		}
		if up.uploads >= p.UploadSlots {
			w.res.Refused++
			w.sim.at(w.sim.now+p.RTT/2, func() { nb.peerResult(f, c, errBusy) })
			return
		}
		up.uploads++
		held := true
		release := func(left float64) {
			if held && left <= p.SendBuffer {
				held = false
				up.uploads--
			}
		}
		total := 0.0
		for k := 0; k < f.Count; k++ {
			total += float64(nb.b.pieceBytes(f.First+k, p.PieceLen))
		}
		release(total)
		res := []*resource{up.up, nb.n.down}
		if w.cpu != nil {
			res = append(res, w.cpu)
		}
		nb.n.inFlows++
		var fl *flow
		watch := 0
		var arm func()
		arm = func() {
			watch++
			v := watch
			w.sim.at(w.sim.now+idleReadTimeout, func() {
				if v != watch || fl.gi < 0 {
					return
				}
				w.net.stop(fl)
				release(0)
				nb.n.inFlows--
				nb.peerResult(f, c, errIdle)
			})
		}
		fl = w.net.start(res, f.Count, func(k int) float64 { return float64(nb.b.pieceBytes(f.First+k, p.PieceLen)) },
			func(k int, last bool) {
				nb.pieceArrived(f.First+k, true)
				arm()
				total -= float64(nb.b.pieceBytes(f.First+k, p.PieceLen))
				release(total)
				if last {
					nb.n.inFlows--
					nb.peerResult(f, c, nil)
				}
			})
		fl.abort = func() {
			release(0)
			nb.n.inFlows--
			nb.peerResult(f, c, errGone)
		}
		arm()
	})
}

type fetchErr string

func (e fetchErr) Error() string { return string(e) }

const (
	errGone fetchErr = "connection closed"
	errBusy fetchErr = "503: no upload slot free"
	errIdle fetchErr = "node delivered no piece in time"
)

// peerResult is the run loop's handling of a node fetch's result.
func (nb *nodeBlob) peerResult(f sched.Fetch, c *conn, err error) {
	w := nb.n.w
	c.busy--
	for i := f.First; i < f.First+f.Count; i++ {
		nb.inFlight.Remove(uint32(i))
	}
	switch err {
	case errBusy:
		c.backoff = w.sim.now + w.p.BusyBackoff
	case errIdle:
		c.banned = true
		w.fallback("idle_peer")
	}
	nb.poke()
}

// fetchOrigin is swarmDownload.fetchOrigin: claims, then one Range
// request to the registry.
func (nb *nodeBlob) fetchOrigin(f sched.Fetch) {
	w := nb.n.w
	p := &w.p
	nb.originBusy++
	nb.originPieces += f.Count
	nb.mine.AddRange(uint64(f.First), uint64(f.First+f.Count))
	w.sim.at(w.sim.now+p.RTT/2+p.ReqProc, func() {
		if nb.n.dead {
			return
		}
		// The registry refuses a share fetch of a range another node
		// fetched as its share within shareHold (internal/regshare).
		if (f.Why == "share" || (f.Why == "steal" && !p.StealUnmarked)) && !p.NoShareDedupe {
			if nb.b.shares == nil {
				nb.b.shares = map[int]shareRec{}
			}
			now := w.sim.now
			if rec, ok := nb.b.shares[f.First]; ok && rec.by != nb.n && now-rec.at < shareHold {
				w.res.ShareRefusals++
				w.sim.at(now+p.RTT/2, func() {
					if nb.taken == nil {
						nb.taken = map[int]float64{}
					}
					for i := f.First; i < f.First+f.Count; i++ {
						nb.taken[i] = w.sim.now + shareHold
					}
					nb.originBusy--
					nb.originPieces -= f.Count
					nb.mine.RemoveRange(uint64(f.First), uint64(f.First+f.Count))
					for i := f.First; i < f.First+f.Count; i++ {
						nb.inFlight.Remove(uint32(i))
					}
					nb.poke()
				})
				return
			}
			nb.b.shares[f.First] = shareRec{nb.n, now}
		}
		nb.n.inFlows++
		fl := w.net.start([]*resource{w.registry.up, nb.n.down}, f.Count,
			func(k int) float64 { return float64(nb.b.pieceBytes(f.First+k, p.PieceLen)) },
			func(k int, last bool) {
				i := f.First + k
				bytes := nb.b.pieceBytes(i, p.PieceLen)
				w.res.RegistryBytes += bytes
				if w.res.OriginWhy == nil {
					w.res.OriginWhy = map[string]int64{}
				}
				w.res.OriginWhy[f.Why] += bytes
				nb.pieceArrived(i, false)
				if last {
					nb.n.inFlows--
					nb.originResult(f)
				}
			})
		fl.abort = func() { nb.n.inFlows-- }
	})
}

func (nb *nodeBlob) originResult(f sched.Fetch) {
	nb.originBusy--
	nb.originPieces -= f.Count
	nb.mine.RemoveRange(uint64(f.First), uint64(f.First+f.Count))
	for i := f.First; i < f.First+f.Count; i++ {
		nb.inFlight.Remove(uint32(i))
	}
	// Still alone (the run loop's last snapshot had no node): take more at once.
	if len(nb.peerBuf) == 0 {
		nb.aloneRun = max(2*nb.aloneRun, 2*f.Count)
	}
	nb.originFailures = 0
	nb.poke()
}

// pieceArrived: the piece is written, announced (anacrolix sends have to
// every connected node) and the run loop poked.
func (nb *nodeBlob) pieceArrived(i int, fromPeer bool) {
	n := nb.n
	w := n.w
	if nb.have.Contains(uint32(i)) {
		return
	}
	nb.have.Add(uint32(i))
	n.lastRx = w.sim.now
	if trace {
		fmt.Fprintf(os.Stderr, "%.3f n%d b%d p%d peer=%v have=%d\n", w.sim.now, n.idx, nb.b.idx, i, fromPeer, nb.have.GetCardinality())
	}
	if fromPeer {
		w.res.PeerBytes += nb.b.pieceBytes(i, w.p.PieceLen)
	}
	for _, c := range nb.conns {
		q := c.peer
		if !q.complete && !q.have.Contains(uint32(i)) && !q.inFlight.Contains(uint32(i)) {
			if w.p.PokeOnHave {
				q.wake(w.sim.now + w.p.RTT/2)
			} else {
				q.tickWake(w.sim.now + w.p.RTT/2)
			}
		}
	}
	if int(nb.have.GetCardinality()) == nb.b.pieces {
		nb.finish()
		return
	}
	nb.poke()
}

func (nb *nodeBlob) finish() {
	n := nb.n
	w := n.w
	nb.complete, nb.doneAt = true, w.sim.now
	nb.wakeVer++
	nb.announce(tracker.ClassComplete, false)
	n.done++
	if n.done == len(n.blobs) {
		n.doneAt = w.sim.now + w.p.FinishOverhead
		w.finished++
	}
}

// viaHTTP is the fallback (agent/download.go viaHTTP): the rest of the
// blob from its present prefix, one plain GET with Range.
func (nb *nodeBlob) viaHTTP() {
	w := nb.n.w
	p := &w.p
	nb.http = true
	first := 0
	for first < nb.b.pieces && nb.have.Contains(uint32(first)) {
		first++
	}
	count := nb.b.pieces - first
	w.sim.at(w.sim.now+p.RTT+p.ReqProc, func() {
		nb.n.inFlows++
		fl := w.net.start([]*resource{w.registry.up, nb.n.down}, count,
			func(k int) float64 { return float64(nb.b.pieceBytes(first+k, p.PieceLen)) },
			func(k int, last bool) {
				i := first + k
				w.res.RegistryBytes += nb.b.pieceBytes(i, p.PieceLen)
				if w.res.OriginWhy == nil {
					w.res.OriginWhy = map[string]int64{}
				}
				w.res.OriginWhy["http"] += nb.b.pieceBytes(i, p.PieceLen)
				// The prefix resume fetches pieces it had again; the blob
				// is whole when the body ends.
				if !nb.have.Contains(uint32(i)) {
					nb.have.Add(uint32(i))
					nb.n.lastRx = w.sim.now
				}
				if last {
					nb.n.inFlows--
					nb.finish()
				}
			})
		fl.abort = func() { nb.n.inFlows-- }
	})
}

func (w *world) fallback(reason string) {
	if w.res.Fallbacks == nil {
		w.res.Fallbacks = map[string]int{}
	}
	w.res.Fallbacks[reason]++
}

// kill stops a node's agent: its transfers abort, its connections close;
// the tracker keeps naming it until its entry expires.
func (n *node) kill() {
	w := n.w
	n.dead = true
	for _, r := range []*resource{n.up, n.down} {
		for len(r.flows) > 0 {
			f := r.flows[0]
			w.net.stop(f)
			if f.abort != nil {
				f.abort()
			}
		}
	}
	for _, nb := range n.blobs {
		for _, c := range slices.Clone(nb.conns) {
			c.closed = true
			c.peer.dropConn(c.other)
		}
		nb.conns = nil
	}
}

var trace = os.Getenv("SIMTRACE") != ""
