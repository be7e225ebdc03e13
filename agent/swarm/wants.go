package swarm

import (
	"sync"
	"time"

	"github.com/jonboulle/clockwork"

	"github.com/shoalproject/shoal/agent/sched"
)

// Wants are the pieces readers of a blob wait for now (Range requests on
// the mirror), shared by those readers and the blob's engine, which plans
// them before anything else (sched.Snapshot.Urgent). Safe for concurrent
// use.
type Wants struct {
	clock  clockwork.Clock
	mu     sync.Mutex
	pieces map[int]*want
	ch     chan struct{} // closed and replaced when the set changes
}

type want struct {
	readers int
	since   time.Time
}

// NewWants makes an empty set keeping time by clock (nil: the real one).
func NewWants(clock clockwork.Clock) *Wants {
	if clock == nil {
		clock = clockwork.NewRealClock()
	}
	return &Wants{clock: clock, pieces: map[int]*want{}, ch: make(chan struct{})}
}

// Add says a reader waits for pieces [first, last]; done says it no longer
// does (call it exactly once).
func (w *Wants) Add(first, last int) (done func()) {
	now := w.clock.Now()
	w.mu.Lock()
	for i := first; i <= last; i++ {
		if p, ok := w.pieces[i]; ok {
			p.readers++
		} else {
			w.pieces[i] = &want{readers: 1, since: now}
		}
	}
	w.ringLocked()
	w.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			w.mu.Lock()
			defer w.mu.Unlock()
			for i := first; i <= last; i++ {
				if p := w.pieces[i]; p != nil {
					if p.readers--; p.readers <= 0 {
						delete(w.pieces, i)
					}
				}
			}
			w.ringLocked()
		})
	}
}

func (w *Wants) ringLocked() {
	close(w.ch)
	w.ch = make(chan struct{})
}

// List returns the wanted pieces (unordered) and a channel closed at the
// next change.
func (w *Wants) List() ([]sched.Want, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]sched.Want, 0, len(w.pieces))
	for i, p := range w.pieces {
		out = append(out, sched.Want{Piece: i, Since: p.since})
	}
	return out, w.ch
}
