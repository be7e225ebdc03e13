package main

import (
	"container/heap"
	"math"
)

// The network is fluid: a transfer is a flow of bytes through resources
// (the sender's uplink, the receiver's downlink, optionally a host-wide
// CPU budget), and the flows share every resource max-min fairly, which is
// what TCP flows through a token-bucket link settle to. Rates are
// recomputed exactly (progressive filling over every active flow) whenever
// the set of flows changed, at most once per network.quantum of simulated
// time: with quantum 0 after every change, which is exact; a few
// milliseconds keeps 10,000-node runs fast at the price of a new flow
// waiting at most that long for its first rate.

type resource struct {
	name  string
	cap   float64 // bytes per second
	flows []*flow

	// progressive filling scratch
	mark int
	rem  float64
	n    int
	wsum float64
	ver  int
}

type flow struct {
	res  []*resource
	idx  []int // position in each resource's flows
	gi   int   // position in network.active
	rate float64
	new  float64
	// weight is the flow's share relative to others at a bottleneck:
	// TCP flows through one FIFO are fair only on average.
	weight float64
	done   bool // frozen during filling
	// last is when pieceRem was last brought up to date.
	last float64
	// pieceRem is the bytes left of the piece being transferred; pieces
	// the pieces left counting this one; pieceLen the bytes of the next.
	pieceRem float64
	pieces   int
	pieceLen func(k int) float64 // bytes of the k-th piece of the flow
	k        int                 // index within the flow of the piece in transfer
	ver      int                 // invalidates scheduled piece events
	onPiece  func(k int, last bool)
	// abort runs when the flow is cut (a node died).
	abort func()
}

type network struct {
	sim     *sim
	active  []*flow
	quantum float64
	// sigma spreads flow weights (lognormal, mean 1); 0: exact fairness.
	// Every period the weights are drawn anew: TCP's unfairness moves
	// about, a flow behind now is ahead later, so it spreads completions
	// without making stragglers of some flows for good.
	sigma   float64
	period  float64
	cycling bool
	dirty   bool
	pending bool // a recompute is scheduled
	epoch   int
	// Recomputes counts rate recomputations, for the run's statistics.
	recomputes int
}

// start adds a flow of the given pieces through res; onPiece runs as each
// piece's last byte arrives (last: the flow is over).
func (n *network) start(res []*resource, pieces int, pieceLen func(k int) float64, onPiece func(k int, last bool)) *flow {
	f := &flow{res: res, idx: make([]int, len(res)), pieces: pieces, pieceLen: pieceLen, onPiece: onPiece, last: n.sim.now, weight: 1}
	if n.sigma > 0 {
		f.weight = n.draw()
		if n.period > 0 && !n.cycling {
			n.cycling = true
			n.sim.at(n.sim.now+n.period, n.redraw)
		}
	}
	f.pieceRem = pieceLen(0)
	for i, r := range res {
		f.idx[i] = len(r.flows)
		r.flows = append(r.flows, f)
	}
	f.gi = len(n.active)
	n.active = append(n.active, f)
	n.changed()
	return f
}

// stop removes a flow (finished or aborted).
func (n *network) stop(f *flow) {
	if f.gi < 0 {
		return
	}
	for i, r := range f.res {
		j := f.idx[i]
		last := r.flows[len(r.flows)-1]
		r.flows[j] = last
		for k, lr := range last.res {
			if lr == r {
				last.idx[k] = j
			}
		}
		r.flows = r.flows[:len(r.flows)-1]
	}
	last := n.active[len(n.active)-1]
	n.active[f.gi] = last
	last.gi = f.gi
	n.active = n.active[:len(n.active)-1]
	f.gi = -1
	f.ver++
	n.changed()
}

func (n *network) changed() {
	n.dirty = true
	if n.pending {
		return
	}
	n.pending = true
	at := n.sim.now
	if n.quantum > 0 {
		at = math.Ceil(n.sim.now/n.quantum) * n.quantum
	}
	n.sim.atLate(at, n.recompute)
}

// recompute sets every active flow's rate to its max-min fair share and
// reschedules the flows whose rate changed.
func (n *network) recompute() {
	n.pending = false
	if !n.dirty {
		return
	}
	n.dirty = false
	n.recomputes++
	maxMin(n.active, &n.epoch)
	now := n.sim.now
	for _, f := range n.active {
		if f.new == f.rate {
			continue
		}
		f.advance(now)
		f.rate = f.new
		n.schedule(f)
	}
}

func (n *network) draw() float64 {
	return math.Exp(n.sigma*n.sim.rng.NormFloat64() - n.sigma*n.sigma/2)
}

// redraw gives every active flow a new weight, while there are flows.
func (n *network) redraw() {
	if len(n.active) == 0 {
		n.cycling = false
		return
	}
	for _, f := range n.active {
		f.weight = n.draw()
	}
	n.changed()
	n.sim.at(n.sim.now+n.period, n.redraw)
}

// advance brings the flow's progress up to now at its current rate.
func (f *flow) advance(now float64) {
	f.pieceRem -= f.rate * (now - f.last)
	if f.pieceRem < 0 {
		f.pieceRem = 0
	}
	f.last = now
}

func (n *network) schedule(f *flow) {
	f.ver++
	if f.rate <= 0 {
		return
	}
	v := f.ver
	n.sim.at(f.last+f.pieceRem/f.rate, func() {
		if f.ver != v || f.gi < 0 {
			return
		}
		n.pieceDone(f)
	})
}

func (n *network) pieceDone(f *flow) {
	now := n.sim.now
	f.last = now
	k := f.k
	f.k++
	last := f.k >= f.pieces
	if last {
		n.stop(f)
	} else {
		f.pieceRem = f.pieceLen(f.k)
		n.schedule(f)
	}
	f.onPiece(k, last)
}

// maxMin is progressive filling: the resource with the smallest fair
// share (remaining capacity over unfrozen flows) fixes the rate of its
// flows, which leave the other resources they cross; repeat.
func maxMin(flows []*flow, epoch *int) {
	*epoch++
	e := *epoch
	h := &resHeap{}
	for _, f := range flows {
		f.done = false
		f.new = 0
		for _, r := range f.res {
			if r.mark != e {
				r.mark, r.rem, r.n, r.ver, r.wsum = e, r.cap, 0, 0, 0
				h.items = append(h.items, resItem{r: r})
			}
			r.n++
			r.wsum += f.weight
		}
	}
	for i := range h.items {
		r := h.items[i].r
		h.items[i].share = r.rem / r.wsum
	}
	heap.Init(h)
	for h.Len() > 0 {
		it := heap.Pop(h).(resItem)
		r := it.r
		if it.ver != r.ver || r.n == 0 {
			continue
		}
		level := math.Max(r.rem, 0) / r.wsum
		for _, f := range r.flows {
			if f.done {
				continue
			}
			f.done = true
			f.new = level * f.weight
			for _, o := range f.res {
				if o == r {
					continue
				}
				o.rem -= f.new
				o.n--
				o.wsum -= f.weight
				o.ver++
				if o.n > 0 {
					heap.Push(h, resItem{r: o, share: math.Max(o.rem, 0) / math.Max(o.wsum, 1e-12), ver: o.ver})
				}
			}
		}
		r.n = 0
	}
}

type resItem struct {
	r     *resource
	share float64
	ver   int
}

type resHeap struct{ items []resItem }

func (h *resHeap) Len() int           { return len(h.items) }
func (h *resHeap) Less(i, j int) bool { return h.items[i].share < h.items[j].share }
func (h *resHeap) Swap(i, j int)      { h.items[i], h.items[j] = h.items[j], h.items[i] }
func (h *resHeap) Push(x any)         { h.items = append(h.items, x.(resItem)) }
func (h *resHeap) Pop() any {
	it := h.items[len(h.items)-1]
	h.items = h.items[:len(h.items)-1]
	return it
}
