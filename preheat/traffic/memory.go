package traffic

import (
	"context"
	"sort"
	"sync"
	"time"
)

// Memory is the single-process Store.
type Memory struct {
	mu      sync.Mutex
	base    map[string]memBase
	buckets map[int64][2]int64 // unix minute -> registry, peers
	keep    time.Duration
}

type memBase struct {
	start      string
	reg, peers int64
	at         time.Time
}

// NewMemory returns an empty store.
func NewMemory() *Memory {
	return &Memory{base: map[string]memBase{}, buckets: map[int64][2]int64{}}
}

// RecordTraffic adds what the node fetched since its previous report.
func (tr *Memory) RecordTraffic(_ context.Context, nodeID string, t NodeTraffic, at time.Time, keep time.Duration) error {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	tr.keep = keep
	prev := tr.base[nodeID]
	reg, peers := Delta(prev.start, prev.reg, prev.peers, t)
	tr.base[nodeID] = memBase{start: t.StartedAt.UTC().Format(time.RFC3339Nano), reg: t.FromRegistry, peers: t.FromPeers, at: at}
	if reg > 0 || peers > 0 {
		min := at.Unix() / 60
		b := tr.buckets[min]
		tr.buckets[min] = [2]int64{b[0] + reg, b[1] + peers}
	}
	// Expire as Redis would: old buckets and nodes not heard of for keep.
	cut := at.Add(-keep)
	for k := range tr.buckets {
		if time.Unix(k*60, 0).Before(cut) {
			delete(tr.buckets, k)
		}
	}
	for id, b := range tr.base {
		if b.at.Before(cut) {
			delete(tr.base, id)
		}
	}
	return nil
}

// Traffic returns the minutes since since that saw traffic, oldest first.
func (tr *Memory) Traffic(_ context.Context, since time.Time) ([]Point, error) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	out := []Point{}
	from := since.Unix() / 60
	for k, b := range tr.buckets {
		if k >= from {
			out = append(out, Point{Minute: time.Unix(k*60, 0).UTC(), FromRegistry: b[0], FromPeers: b[1]})
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Minute.Before(out[k].Minute) })
	return out, nil
}
