// Package sched decides where each piece of a blob comes from: which node
// to ask for which run of pieces, which pieces this node takes from the
// registry, when to steal another node's share, when the swarm has stalled.
// It is pure: every decision is a function of a Snapshot (what this node
// knows now, clock included) and Limits, so it is tested with tables, and
// the engine that owns the state only carries out what Plan returns.
//
// The policy:
//   - Other nodes: anything they have that this node lacks, rarest first
//     (ties: lowest index, which keeps a lone source streaming in order); in
//     contiguous runs of up to PeerRun from a node that has the whole blob,
//     one piece per request from a node still downloading.
//   - The registry: only this node's share of the pieces no connected node
//     has or has claimed. Pieces are dealt out in blocks (BlockSize): block
//     k belongs to the connected node (this one included) with the highest
//     hash of (its ID, k), a partition every node computes alike and that
//     moves few blocks when a node joins. A node alone (none connected,
//     none being connected) takes everything, in runs that start at one
//     piece and double while it stays alone, up to AloneRun. At most
//     SwarmOrigin pieces of a blob are on their way from the registry at a
//     time, swarm-wide as far as claims tell, so each arrives (and is
//     traded) sooner.
//   - Stealing: a node with nothing to fetch, while no node is fetching
//     from the registry either, for StealAfter + rank × StealStagger takes
//     one unclaimed missing piece outside its share, counting from the end
//     (owners start at the front).
//   - Settling: before its first registry fetch a node waits for the
//     swarm to form (the engine says when: tracker answered, connections
//     made, or a time limit), so the first pieces are already split.
//   - Readers first (Urgent): pieces a Range request waits for go before
//     everything else, from a node that has them (up to UrgentPerPeer
//     requests beyond PerPeer), else from the registry (UrgentRequests of
//     their own, outside the share and the swarm-wide cap), one piece per
//     request; nothing else starts while a reader waits. So that N nodes
//     reading the same range cost the registry one read, a piece no node
//     has is fetched from the registry by its block's owner at once, by
//     the others only after UrgentGrace without the owner's claim, and a
//     piece another node claimed is awaited (its arrival is announced) for
//     UrgentClaimWait before this node fetches it too. Before the swarm
//     settled (the tracker answered, the connections it named are made)
//     a wanted piece waits up to UrgentSettle: a node may have it.
//   - Stalls (Watch, StallBound): a blob that gained no piece for a few
//     piece-times goes solo, whatever its connections look like: every
//     piece not yet on its way from the registry is fetched from it, this
//     node's share first. Peers that connect and advertise pieces but
//     deliver nothing (or a byte at a time) cannot hold a blob longer
//     than that bound.
package sched

import (
	"cmp"
	"encoding/binary"
	"hash/fnv"
	"slices"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
)

// Peer is a connected node as the scheduler sees it.
type Peer struct {
	ID   string
	Has  *roaring.Bitmap // pieces it announced
	Data bool            // it serves pieces over the data path
	Busy int             // this node's requests to it in flight
}

// Snapshot is everything a plan depends on.
type Snapshot struct {
	Now       time.Time
	NumPieces int
	Self      string
	Have      *roaring.Bitmap // present here
	InFlight  *roaring.Bitmap // being fetched by this node, from anywhere
	Claimed   *roaring.Bitmap // other nodes are fetching these from the registry
	Peers     []Peer
	OriginState
	Phase
	Readers
}

// OriginState is this node's registry requests for the blob.
type OriginState struct {
	// OriginInFlight is the part of InFlight coming from the registry.
	OriginInFlight *roaring.Bitmap
	// OriginBusy is this node's registry requests in flight.
	OriginBusy int
	// OriginPieces is the pieces of those requests not yet arrived.
	OriginPieces int
}

// Phase is where this node's download of the blob stands.
type Phase struct {
	// AloneRun is how many pieces a registry request may take while this
	// node is alone (it grows with every run that completes alone).
	AloneRun int
	Settled  bool // the swarm had its chance to form
	// Forming: connections to nodes the tracker named are still being
	// made. A node without connected nodes is not alone then, only slow
	// to connect (a loaded host takes longer than the settle limit), and
	// fetching "alone" would fetch what those nodes fetch too.
	Forming bool
	// Solo: this blob stalled. Every piece not present and not already on
	// its way from the registry is this node's to fetch from it, whoever
	// advertises or claims it, and pieces being fetched from nodes too.
	Solo      bool
	IdleSince time.Time
}

// Readers is what Range readers wait for.
type Readers struct {
	// Urgent are the pieces readers wait for now (Range requests), each
	// with when it was first wanted; UrgentBusy is this node's registry
	// requests for them in flight (not counted in OriginBusy).
	Urgent     []Want
	UrgentBusy int
}

// Want is a piece a reader waits for, since when.
type Want struct {
	Piece int
	Since time.Time
}

// Limits are the policy's knobs.
type Limits struct {
	PerPeer        int // requests in flight to one node
	PeerRun        int // pieces per request to a node
	OriginRequests int // registry requests in flight
	OriginRun      int // pieces per registry request and per share block, in a swarm
	AloneRun       int // the most pieces per registry request, alone
	SwarmOrigin    int // registry pieces in flight swarm-wide, in a swarm
	StealAfter     time.Duration
	StealStagger   time.Duration
	UrgentLimits
}

// UrgentLimits bound what is done for pieces readers wait for.
type UrgentLimits struct {
	// UrgentPerPeer is how many requests for urgent pieces a node may have
	// beyond PerPeer, UrgentRequests the registry requests for them.
	UrgentPerPeer  int
	UrgentRequests int
	// UrgentGrace is how long an urgent piece whose block another node
	// owns waits for a claim before this node fetches it from the
	// registry; UrgentClaimWait how long a claimed one waits for its
	// claimer.
	UrgentGrace     time.Duration
	UrgentClaimWait time.Duration
	// UrgentSettle is how long an urgent piece waits for the swarm to
	// settle before this node fetches it from the registry anyway.
	UrgentSettle time.Duration
}

// DefaultLimits suit 1 MiB pieces on a LAN.
var DefaultLimits = Limits{
	PerPeer:        2,
	PeerRun:        16,
	OriginRequests: 2,
	OriginRun:      4,
	AloneRun:       64,
	SwarmOrigin:    8,
	StealAfter:     time.Second,
	StealStagger:   100 * time.Millisecond,
	UrgentLimits: UrgentLimits{
		UrgentPerPeer:   2,
		UrgentRequests:  4,
		UrgentGrace:     15 * time.Millisecond,
		UrgentClaimWait: 2 * time.Second,
		UrgentSettle:    250 * time.Millisecond,
	},
}

// Fetch is one request to start: pieces [First, First+Count) from Peer, or
// from the registry when Peer is "".
type Fetch struct {
	Peer  string
	First int
	Count int
	// Why a registry fetch was planned: "alone", "solo" (the swarm
	// stalled), "share" (this node's share), "steal", or "range" (a
	// reader waits for it; fetches from nodes say "range" too).
	Why string
}

// Origin reports whether the fetch goes to the registry.
func (f Fetch) Origin() bool { return f.Peer == "" }

// Plan returns the requests to start now and the new idle clock (zero when
// this node is not idle).
func Plan(s Snapshot, l Limits) (out []Fetch, idleSince time.Time) {
	p := newPlanner(s, l)
	p.urgent()
	if p.readerWaits() {
		// Nothing else starts while a reader waits: on a node's uplink
		// and the registry's, a bulk request started now shares the
		// bandwidth with the reader's pieces (a cold 1 MiB range took
		// 2.2x a direct read with the first alone runs beside it).
		return p.out, time.Time{}
	}
	p.fromNodes()
	_, members := Rank(s.Self, s.Peers)
	switch {
	case !s.Settled:
	case s.Solo:
		p.out = planSolo(s, l, p.out, p.inFlight, shareOf(s, BlockSize(s.NumPieces, l)))
	case members == 1 && s.Forming:
		// Not alone, only slow to connect: the stall watch goes solo if
		// they never come.
	case members == 1:
		p.alone()
	default:
		p.share()
		return p.out, p.idle()
	}
	return p.out, time.Time{}
}

// planner is one Plan's working state.
type planner struct {
	s        Snapshot
	l        Limits
	out      []Fetch
	inFlight *roaring.Bitmap // s.InFlight and what this plan starts
	holders  []int           // data-serving nodes holding each piece
	atNodes  *roaring.Bitmap // pieces any connected node has
	busy     int             // registry requests in flight
	pending  int             // registry pieces on their way swarm-wide
}

func newPlanner(s Snapshot, l Limits) *planner {
	s.Peers = slices.Clone(s.Peers) // urgent counts its requests in Busy
	p := &planner{s: s, l: l, inFlight: s.InFlight.Clone(), holders: make([]int, s.NumPieces),
		atNodes: roaring.New(), busy: s.OriginBusy}
	for _, n := range s.Peers {
		p.atNodes.Or(n.Has)
		if !n.Data {
			continue
		}
		for it := n.Has.Iterator(); it.HasNext(); {
			if i := int(it.Next()); i < s.NumPieces {
				p.holders[i]++
			}
		}
	}
	return p
}

func (p *planner) missing(i int) bool {
	return !p.s.Have.Contains(uint32(i)) && !p.inFlight.Contains(uint32(i))
}

// free: missing and no node has it.
func (p *planner) free(i int) bool { return p.missing(i) && !p.atNodes.Contains(uint32(i)) }

func (p *planner) unclaimed(i int) bool { return p.free(i) && !p.s.Claimed.Contains(uint32(i)) }

// fromNodes plans the fetches from nodes, rarest first: what they have is
// free for the registry.
func (p *planner) fromNodes() {
	peers := slices.Clone(p.s.Peers)
	slices.SortFunc(peers, func(a, b Peer) int { return cmp.Compare(a.Busy, b.Busy) })
	for progress := true; progress; {
		progress = false
		for pi := range peers {
			if f, ok := p.fromNode(&peers[pi]); ok {
				p.out = append(p.out, f)
				peers[pi].Busy++
				progress = true
			}
		}
	}
}

func (p *planner) fromNode(n *Peer) (Fetch, bool) {
	if !n.Data || n.Busy >= p.l.PerPeer {
		return Fetch{}, false
	}
	best := -1
	for it := n.Has.Iterator(); it.HasNext(); {
		i := int(it.Next())
		if i >= p.s.NumPieces {
			break
		}
		if p.missing(i) && (best < 0 || p.holders[i] < p.holders[best]) {
			best = i
		}
	}
	if best < 0 {
		return Fetch{}, false
	}
	// Long runs only from a node that has the whole blob: from a node
	// still downloading, piece by piece, so that a piece one node just
	// got is not queued behind a run at its first holder while others
	// could relay it.
	run := 1
	if n.Has.GetCardinality() >= uint64(p.s.NumPieces) {
		run = p.l.PeerRun
	}
	k := 0
	for i := best; i < p.s.NumPieces && k < run && p.missing(i) && n.Has.Contains(uint32(i)); i++ {
		p.inFlight.Add(uint32(i))
		k++
	}
	return Fetch{Peer: n.ID, First: best, Count: k}, true
}

// urgent plans the pieces readers wait for, before anything else: from a
// node that has them, else from the registry, unless another node is
// about to fetch them from it (it owns their block, or claimed them).
func (p *planner) urgent() {
	s, l := p.s, p.l
	if len(s.Urgent) == 0 {
		return
	}
	if l.UrgentRequests == 0 && l.UrgentPerPeer == 0 {
		l = withUrgent(l)
	}
	since := make(map[int]time.Time, len(s.Urgent))
	for _, w := range s.Urgent {
		if w.Piece >= 0 && w.Piece < s.NumPieces {
			since[w.Piece] = w.Since
		}
	}
	pieces := make([]int, 0, len(since))
	for i := range since {
		pieces = append(pieces, i)
	}
	slices.Sort(pieces)
	ids := make([]string, 0, len(s.Peers)+1)
	ids = append(ids, s.Self)
	for _, n := range s.Peers {
		ids = append(ids, n.ID)
	}
	block := BlockSize(s.NumPieces, l)
	wanted := func(i int) bool { _, ok := since[i]; return ok && p.missing(i) }
	busy := s.UrgentBusy
	for _, i := range pieces {
		if !wanted(i) {
			continue
		}
		// One piece per request, from nodes and the registry: the
		// pieces of a range arrive side by side, and the reader's last
		// byte waits for the slowest piece, not for their sum.
		if n := p.urgentHolder(i, l); n != nil {
			p.inFlight.Add(uint32(i))
			p.out = append(p.out, Fetch{Peer: n.ID, First: i, Count: 1, Why: "range"})
			n.Busy++
			continue
		}
		waited := s.Now.Sub(since[i])
		switch {
		case p.atNodes.Contains(uint32(i)):
			continue // a node has it: its slots free up soon
		case s.Claimed.Contains(uint32(i)) && !s.Solo && waited < l.UrgentClaimWait:
			continue // on its way to another node, which announces it
		case !s.Settled && waited < l.UrgentSettle:
			continue // the nodes the tracker names may have it
		case !s.Solo && waited < l.UrgentGrace && Owner(i/block, ids) != s.Self:
			continue // the owner's claim may be on its way
		case busy >= l.UrgentRequests:
			continue
		}
		p.inFlight.Add(uint32(i))
		p.out = append(p.out, Fetch{First: i, Count: 1, Why: "range"})
		busy++
	}
}

// readerWaits reports whether a piece a reader wants is not here yet.
func (p *planner) readerWaits() bool {
	for _, w := range p.s.Urgent {
		if w.Piece >= 0 && w.Piece < p.s.NumPieces && !p.s.Have.Contains(uint32(w.Piece)) {
			return true
		}
	}
	return false
}

// urgentHolder is the least busy data-serving node that has piece i and
// a request slot for urgent pieces, nil if none.
func (p *planner) urgentHolder(i int, l Limits) *Peer {
	var best *Peer
	for k := range p.s.Peers {
		n := &p.s.Peers[k]
		if n.Data && n.Has.Contains(uint32(i)) && n.Busy < l.PerPeer+l.UrgentPerPeer && (best == nil || n.Busy < best.Busy) {
			best = n
		}
	}
	return best
}

// withUrgent fills the urgent knobs of limits made before they existed.
func withUrgent(l Limits) Limits {
	d := DefaultLimits
	l.UrgentPerPeer, l.UrgentRequests, l.UrgentGrace, l.UrgentClaimWait, l.UrgentSettle = d.UrgentPerPeer, d.UrgentRequests, d.UrgentGrace, d.UrgentClaimWait, d.UrgentSettle
	return l
}

// alone plans a lone node's registry fetches: every missing piece no node
// has, in runs that start at one piece and double while the node stays
// alone (s.AloneRun, up to l.AloneRun): a node that is really alone soon
// moves the blob in few large requests, and when nodes of a rollout turn
// up just after it settled, it has taken little that they take too
// (cutting a request short would waste what the registry's socket buffers
// already hold).
func (p *planner) alone() {
	s := p.s
	run := min(max(s.AloneRun, 1), p.l.AloneRun)
	for i := 0; i < s.NumPieces && p.busy < p.l.OriginRequests; i++ {
		if !p.free(i) {
			continue
		}
		first := i
		for ; i < s.NumPieces && i-first < run && p.free(i); i++ {
			p.inFlight.Add(uint32(i))
		}
		p.out = append(p.out, Fetch{First: first, Count: i - first, Why: "alone"})
		p.busy++
		i--
	}
}

// share plans this node's share of the pieces no node has or claimed,
// within SwarmOrigin pieces on their way swarm-wide.
func (p *planner) share() {
	s, l := p.s, p.l
	p.pending = int(roaring.AndNot(s.Claimed, p.atNodes).GetCardinality()) + s.OriginPieces
	block := BlockSize(s.NumPieces, l)
	mine := shareOf(s, block)
	for i := 0; i < s.NumPieces && p.busy < l.OriginRequests && p.pending < l.SwarmOrigin; i++ {
		if !mine(i) || !p.unclaimed(i) {
			continue
		}
		first := i
		for ; i < s.NumPieces && i-first < block && mine(i) && p.unclaimed(i) && p.pending < l.SwarmOrigin; i++ {
			p.inFlight.Add(uint32(i))
			p.pending++
		}
		p.out = append(p.out, Fetch{First: first, Count: i - first, Why: "share"})
		p.busy++
		i-- // the piece that ended the run may start the next
	}
}

// idle runs the idle clock after share, and steals a piece when it ran
// out: a node with nothing to fetch, while no node is fetching from the
// registry either, for StealAfter + rank × StealStagger takes one
// unclaimed missing piece outside its share, counting from the end.
func (p *planner) idle() time.Time {
	s, l := p.s, p.l
	if len(p.out) > 0 || p.busy > 0 || !s.InFlight.IsEmpty() || p.pending > 0 {
		// Fetching, or some node is still fetching from the registry: not
		// idle. Stealing is for pieces nobody is fetching (an owner slow
		// to start, or gone); while the registry is busy, a stolen piece
		// is one it sends twice.
		return time.Time{}
	}
	for it := p.atNodes.Iterator(); it.HasNext(); {
		if i := int(it.Next()); i < s.NumPieces && p.missing(i) {
			return time.Time{} // a node has something for us
		}
	}
	rank, _ := Rank(s.Self, s.Peers)
	switch {
	case s.IdleSince.IsZero():
		return s.Now
	case s.Now.Sub(s.IdleSince) < l.StealAfter+time.Duration(rank)*l.StealStagger:
		return s.IdleSince
	}
	var candidates []int
	for i := s.NumPieces - 1; i >= 0; i-- {
		if p.unclaimed(i) {
			candidates = append(candidates, i)
		}
	}
	if len(candidates) == 0 {
		return s.IdleSince
	}
	p.out = append(p.out, Fetch{First: candidates[rank%len(candidates)], Count: 1, Why: "steal"})
	return time.Time{}
}

// shareOf returns whether piece i lies in a block this node owns among
// itself and its connected nodes (rendezvous hashing, Owner).
func shareOf(s Snapshot, block int) func(i int) bool {
	ids := make([]string, 0, len(s.Peers)+1)
	ids = append(ids, s.Self)
	for _, p := range s.Peers {
		ids = append(ids, p.ID)
	}
	owned := map[int]bool{}
	return func(i int) bool {
		k := i / block
		own, ok := owned[k]
		if !ok {
			own = Owner(k, ids) == s.Self
			owned[k] = own
		}
		return own
	}
}

// planSolo adds the registry fetches of a stalled blob: every piece not
// present, not already coming from the registry and not just planned from
// a node, this node's share first (the nodes wait for those from it), then
// the rest, in runs of at least OriginRun pieces (of s.AloneRun once it
// grew, up to l.AloneRun). What nodes advertise, claim or are sending
// counts for nothing here: that is what stalled.
func planSolo(s Snapshot, l Limits, out []Fetch, inFlight *roaring.Bitmap, mine func(int) bool) []Fetch {
	// Not what was in flight from nodes before this plan: what was just
	// planned from them, and what comes from the registry already.
	taken := roaring.AndNot(inFlight, s.InFlight)
	if s.OriginInFlight != nil {
		taken.Or(s.OriginInFlight)
	}
	wanted := func(i int) bool { return !s.Have.Contains(uint32(i)) && !taken.Contains(uint32(i)) }
	run := min(max(s.AloneRun, l.OriginRun, 1), max(l.AloneRun, 1))
	busy := s.OriginBusy
	for _, share := range []bool{true, false} {
		for i := 0; i < s.NumPieces && busy < l.OriginRequests; i++ {
			ok := func(i int) bool { return wanted(i) && (!share || mine(i)) }
			if !ok(i) {
				continue
			}
			first := i
			for ; i < s.NumPieces && i-first < run && ok(i); i++ {
				taken.Add(uint32(i))
			}
			out = append(out, Fetch{First: first, Count: i - first, Why: "solo"})
			busy++
			i--
		}
	}
	return out
}

// BlockSize is how many consecutive pieces form one share block: OriginRun
// for blobs large enough that every node of a big swarm still owns
// blocks, single pieces for small ones (a layer of 16 pieces in blocks of
// 4 would leave all but 4 nodes idle). It depends on the blob alone, so
// nodes with different views of the swarm still agree on the blocks.
func BlockSize(numPieces int, l Limits) int {
	if numPieces < 64*l.OriginRun {
		return 1
	}
	return l.OriginRun
}

// Owner is the node that fetches block k from the registry: the one of ids
// with the highest hash of (id, k) — rendezvous hashing. Nodes that see
// different members (connections still forming) disagree only about the
// blocks whose owner one of them does not see yet, where sorting IDs into
// ranks would reshuffle every block.
func Owner(k int, ids []string) string {
	var best string
	var bestH uint64
	for i, id := range ids {
		h := fnv.New64a()
		h.Write([]byte(id))
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(k)))
		if v := mix(h.Sum64()); i == 0 || v > bestH || (v == bestH && id > best) {
			best, bestH = id, v
		}
	}
	return best
}

// mix is MurmurHash3's 64-bit finalizer: FNV alone orders IDs that
// differ in one byte alike for every k.
func mix(x uint64) uint64 {
	x ^= x >> 33
	x *= 0xff51afd7ed558ccd
	x ^= x >> 33
	x *= 0xc4ceb9fe1a85ec53
	x ^= x >> 33
	return x
}

// Rank is self's position among the sorted IDs of itself and the peers,
// and their number.
func Rank(self string, peers []Peer) (rank, members int) {
	ids := []string{self}
	for _, p := range peers {
		ids = append(ids, p.ID)
	}
	slices.Sort(ids)
	return slices.Index(ids, self), len(ids)
}

// Verdict is what the stall watch decides.
type Verdict int

const (
	Wait   Verdict = iota // keep going
	GoSolo                // nothing arrives: take every missing piece from the registry
	GiveUp                // still nothing, or too long: plain HTTP for the rest
)

// StallPieces is how many piece-times without a new piece make a stall.
const StallPieces = 4

// MaxStallBound caps StallBound: however large the pieces and slow the
// expected rate, a blob that gains nothing for this long is stalled.
const MaxStallBound = time.Minute

// StallBound is how long a blob may gain no piece before the node stops
// waiting on the swarm: StallPieces piece-times, a piece-time being one
// piece at rate bytes/s (the rate this blob was seen to arrive at, or
// what the node assumes of its link when it has seen none, whichever is
// higher: a swarm that slows to a trickle must not stretch its own
// bound). The result lies in [floor, max(floor, MaxStallBound)]: floor
// (p2p.stallTimeout) keeps a fast link from calling every hiccup a stall.
func StallBound(pieceLen int64, rate float64, floor time.Duration) time.Duration {
	if rate <= 0 || pieceLen <= 0 {
		return max(floor, MaxStallBound)
	}
	d := time.Duration(float64(StallPieces*pieceLen) / rate * float64(time.Second))
	return min(max(d, floor), max(floor, MaxStallBound))
}

// Watch is the stall decision for one blob. lastPiece is when the blob
// last gained a piece, from anywhere (bytes trickling in without making a
// piece are not progress: a node sending a byte at a time must not hold
// the blob); in solo, lastOrigin is when registry bytes for it last
// arrived (a slow registry is still the registry, and plain HTTP would be
// no faster). Neither open connections nor requests in flight count: the
// bound is the same whatever this node's connections look like.
func Watch(now, start, lastPiece, lastOrigin time.Time, solo bool, bound, deadline time.Duration) Verdict {
	switch {
	case now.Sub(start) > deadline:
		return GiveUp
	case now.Sub(lastPiece) < bound:
		return Wait
	case !solo:
		return GoSolo
	case now.Sub(lastOrigin) < bound:
		return Wait
	default:
		return GiveUp
	}
}
