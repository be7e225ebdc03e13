package main

import (
	"container/heap"
	"math/rand/v2"
)

// sim is the discrete-event core: a clock and a queue of actions ordered
// by time, then by the order they were scheduled (so equal times run
// first-come first-served and a run is reproducible from its seed).
type sim struct {
	now    float64
	seq    uint64
	q      evHeap
	events uint64
	rng    *rand.Rand
}

type event struct {
	t   float64
	seq uint64
	fn  func()
}

// at schedules fn at time t (never before now).
func (s *sim) at(t float64, fn func()) {
	if t < s.now {
		t = s.now
	}
	s.seq++
	heap.Push(&s.q, event{t: t, seq: s.seq, fn: fn})
}

// atLate schedules fn at t after everything else already due at t: used
// for the network's rate recompute, which should see every flow the
// actions of that instant started or stopped.
func (s *sim) atLate(t float64, fn func()) {
	if t < s.now {
		t = s.now
	}
	s.seq++
	heap.Push(&s.q, event{t: t, seq: s.seq | 1<<63, fn: fn})
}

// run executes events until the queue is empty, stop returns true, or
// the clock passes until.
func (s *sim) run(until float64, stop func() bool) {
	for s.q.Len() > 0 {
		e := heap.Pop(&s.q).(event)
		if e.t > until {
			s.now = until
			return
		}
		s.now = e.t
		s.events++
		e.fn()
		if stop != nil && stop() {
			return
		}
	}
}

type evHeap []event

func (h evHeap) Len() int { return len(h) }
func (h evHeap) Less(i, j int) bool {
	if h[i].t != h[j].t {
		return h[i].t < h[j].t
	}
	return h[i].seq < h[j].seq
}
func (h evHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i] }
func (h *evHeap) Push(x any)   { *h = append(*h, x.(event)) }
func (h *evHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	*h = old[:len(old)-1]
	return e
}
