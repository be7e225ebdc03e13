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
	// OriginBusy is this node's registry requests in flight.
	OriginBusy int
	// OriginPieces is the pieces of those requests not yet arrived.
	OriginPieces int
	Claimed      *roaring.Bitmap // other nodes are fetching these from the registry
	Peers        []Peer
	// AloneRun is how many pieces a registry request may take while this
	// node is alone (it grows with every run that completes alone).
	AloneRun int
	Settled  bool // the swarm had its chance to form
	// Forming: connections to nodes the tracker named are still being
	// made. A node without connected nodes is not alone then, only slow
	// to connect (a loaded host takes longer than the settle limit), and
	// fetching "alone" would fetch what those nodes fetch too.
	Forming   bool
	Solo      bool // the swarm stalled: every missing piece is this node's share
	IdleSince time.Time
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
}

// Fetch is one request to start: pieces [First, First+Count) from Peer, or
// from the registry when Peer is "".
type Fetch struct {
	Peer  string
	First int
	Count int
	// Why a registry fetch was planned: "alone", "solo" (the swarm
	// stalled), "share" (this node's share) or "steal".
	Why string
}

// Origin reports whether the fetch goes to the registry.
func (f Fetch) Origin() bool { return f.Peer == "" }

// Plan returns the requests to start now and the new idle clock (zero when
// this node is not idle).
func Plan(s Snapshot, l Limits) (out []Fetch, idleSince time.Time) {
	inFlight := s.InFlight.Clone()
	missing := func(i int) bool {
		return !s.Have.Contains(uint32(i)) && !inFlight.Contains(uint32(i))
	}
	// Holders of each piece among data-serving nodes, for rarest first.
	holders := make([]int, s.NumPieces)
	atNodes := roaring.New()
	for _, p := range s.Peers {
		atNodes.Or(p.Has)
		if !p.Data {
			continue
		}
		for it := p.Has.Iterator(); it.HasNext(); {
			if i := int(it.Next()); i < s.NumPieces {
				holders[i]++
			}
		}
	}

	// Nodes first: what they have is free for the registry.
	peers := slices.Clone(s.Peers)
	slices.SortFunc(peers, func(a, b Peer) int { return cmp.Compare(a.Busy, b.Busy) })
	for progress := true; progress; {
		progress = false
		for pi := range peers {
			p := &peers[pi]
			if !p.Data || p.Busy >= l.PerPeer {
				continue
			}
			best := -1
			for it := p.Has.Iterator(); it.HasNext(); {
				i := int(it.Next())
				if i >= s.NumPieces {
					break
				}
				if missing(i) && (best < 0 || holders[i] < holders[best]) {
					best = i
				}
			}
			if best < 0 {
				continue
			}
			// Long runs only from a node that has the whole blob: from a
			// node still downloading, piece by piece, so that a piece one
			// node just got is not queued behind a run at its first holder
			// while others could relay it.
			run := 1
			if p.Has.GetCardinality() >= uint64(s.NumPieces) {
				run = l.PeerRun
			}
			n := 0
			for i := best; i < s.NumPieces && n < run && missing(i) && p.Has.Contains(uint32(i)); i++ {
				inFlight.Add(uint32(i))
				n++
			}
			out = append(out, Fetch{Peer: p.ID, First: best, Count: n})
			p.Busy++
			progress = true
		}
	}

	if !s.Settled {
		return out, time.Time{}
	}
	free := func(i int) bool { return missing(i) && !atNodes.Contains(uint32(i)) }
	rank, members := Rank(s.Self, s.Peers)
	busy := s.OriginBusy

	if members == 1 && s.Forming && !s.Solo {
		return out, time.Time{} // the stall watch goes solo if they never come
	}
	if s.Solo || members == 1 {
		// Alone, or the swarm stalled: every missing piece no node has, in
		// runs that start at one piece and double while the node stays
		// alone (s.AloneRun, up to l.AloneRun): a node that is really alone
		// soon moves the blob in few large requests, and when nodes of a
		// rollout turn up just after it settled, it has taken little that
		// they take too (cutting a request short would waste what the
		// registry's socket buffers already hold).
		run := min(max(s.AloneRun, 1), l.AloneRun)
		for i := 0; i < s.NumPieces && busy < l.OriginRequests; i++ {
			if !free(i) {
				continue
			}
			first := i
			for ; i < s.NumPieces && i-first < run && free(i); i++ {
				inFlight.Add(uint32(i))
			}
			why := "alone"
			if s.Solo {
				why = "solo"
			}
			out = append(out, Fetch{First: first, Count: i - first, Why: why})
			busy++
			i--
		}
		return out, time.Time{}
	}

	unclaimed := func(i int) bool { return free(i) && !s.Claimed.Contains(uint32(i)) }
	pending := int(roaring.AndNot(s.Claimed, atNodes).GetCardinality()) + s.OriginPieces
	block := BlockSize(s.NumPieces, l)
	ids := make([]string, 0, members)
	ids = append(ids, s.Self)
	for _, p := range s.Peers {
		ids = append(ids, p.ID)
	}
	owned := map[int]bool{}
	mine := func(i int) bool {
		k := i / block
		own, ok := owned[k]
		if !ok {
			own = Owner(k, ids) == s.Self
			owned[k] = own
		}
		return own
	}
	for i := 0; i < s.NumPieces && busy < l.OriginRequests && pending < l.SwarmOrigin; i++ {
		if !mine(i) || !unclaimed(i) {
			continue
		}
		first := i
		for ; i < s.NumPieces && i-first < block && mine(i) && unclaimed(i) && pending < l.SwarmOrigin; i++ {
			inFlight.Add(uint32(i))
			pending++
		}
		out = append(out, Fetch{First: first, Count: i - first, Why: "share"})
		busy++
		i-- // the piece that ended the run may start the next
	}
	if len(out) > 0 || busy > 0 || !s.InFlight.IsEmpty() || pending > 0 {
		// Fetching, or some node is still fetching from the registry: not
		// idle. Stealing is for pieces nobody is fetching (an owner slow
		// to start, or gone); while the registry is busy, a stolen piece
		// is one it sends twice.
		return out, time.Time{}
	}
	for it := atNodes.Iterator(); it.HasNext(); {
		if i := int(it.Next()); i < s.NumPieces && missing(i) {
			return out, time.Time{} // a node has something for us
		}
	}
	switch {
	case s.IdleSince.IsZero():
		return out, s.Now
	case s.Now.Sub(s.IdleSince) < l.StealAfter+time.Duration(rank)*l.StealStagger:
		return out, s.IdleSince
	}
	var candidates []int
	for i := s.NumPieces - 1; i >= 0; i-- {
		if unclaimed(i) {
			candidates = append(candidates, i)
		}
	}
	if len(candidates) == 0 {
		return out, s.IdleSince
	}
	return append(out, Fetch{First: candidates[rank%len(candidates)], Count: 1, Why: "steal"}), time.Time{}
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

// Watch is the stall decision. Progress is anything useful arriving for
// any blob of the node (pieces arrive out of order, and a slow swarm serves
// several blobs); busy means this node's own fetches are under way (each
// has its own timeout), which is not a stall.
func Watch(now, start, lastProgress time.Time, busy, solo bool, stall, deadline time.Duration) Verdict {
	switch {
	case now.Sub(start) > deadline:
		return GiveUp
	case busy || now.Sub(lastProgress) < stall:
		return Wait
	case !solo:
		return GoSolo
	default:
		return GiveUp
	}
}
