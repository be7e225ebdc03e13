package tracker

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"
)

const memShards = 64

// MemoryStore keeps swarms in process memory: the embedded default for a
// single tracker (`shoal run`). Swarms are sharded by infohash so announces
// for different swarms rarely contend on one lock.
//
// Per swarm, peers are in a map by key, in one slice per class (random
// picks by index, removal by swap with the last) and in a list ordered by
// expiry (pruning pops from its head). An announce costs O(Sample) plus
// the peers it prunes, each pruned once: nothing walks the swarm.
type MemoryStore struct {
	shards [memShards]memShard
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

type memShard struct {
	mu     sync.Mutex
	swarms map[[20]byte]*memSwarm
	// rng draws the shard's samples, under mu: announces to one shard are
	// serialised anyway, so a source per shard costs no lock of its own.
	rng *rand.Rand
}

type memSwarm struct {
	peers   map[peerKey]*memPeer
	classes [numClasses][]*memPeer
	// head and tail of the expiry order, earliest first.
	head, tail *memPeer
	downloaded int
}

type memPeer struct {
	Peer
	key        peerKey
	expires    time.Time
	idx        int // position in its class's slice
	prev, next *memPeer
}

// NewMemoryStore returns an empty store whose sweeper drops dead swarms
// every sweep interval, so memory stays bounded even for swarms nobody
// announces to again.
func NewMemoryStore(sweep time.Duration) *MemoryStore {
	return newMemoryStore(sweep, func(int) *rand.Rand { return newRand() })
}

// NewSeededMemoryStore is NewMemoryStore whose samples are a function of
// seed and the announces applied, in order: for simulations and tests that
// must replay a run. Anyone who knows the seed can predict the samples, so
// a tracker facing the network uses NewMemoryStore.
func NewSeededMemoryStore(sweep time.Duration, seed uint64) *MemoryStore {
	return newMemoryStore(sweep, func(i int) *rand.Rand { return rand.New(rand.NewPCG(seed, uint64(i))) })
}

func newMemoryStore(sweep time.Duration, source func(shard int) *rand.Rand) *MemoryStore {
	s := &MemoryStore{stop: make(chan struct{}), done: make(chan struct{})}
	for i := range s.shards {
		s.shards[i].swarms = make(map[[20]byte]*memSwarm)
		s.shards[i].rng = source(i)
	}
	if sweep <= 0 {
		sweep = time.Minute
	}
	go s.sweeper(sweep)
	return s
}

func (s *MemoryStore) shard(ih [20]byte) *memShard { return &s.shards[int(ih[0])%memShards] }

func (s *MemoryStore) sweeper(every time.Duration) {
	defer close(s.done)
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case now := <-t.C:
			s.sweep(now)
		}
	}
}

// sweep drops swarms whose every peer has expired (the last in the expiry
// order is the latest). Live swarms are pruned on their own announces.
func (s *MemoryStore) sweep(now time.Time) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for ih, sw := range sh.swarms {
			if sw.tail == nil || !now.Before(sw.tail.expires) {
				delete(sh.swarms, ih)
			}
		}
		sh.mu.Unlock()
	}
}

func (sw *memSwarm) unlink(p *memPeer) {
	if p.prev != nil {
		p.prev.next = p.next
	} else {
		sw.head = p.next
	}
	if p.next != nil {
		p.next.prev = p.prev
	} else {
		sw.tail = p.prev
	}
	p.prev, p.next = nil, nil
}

// link places p in expiry order, searching from the tail: with one TTL for
// every announce a refreshed peer is the latest, so this is O(1).
func (sw *memSwarm) link(p *memPeer) {
	at := sw.tail
	for at != nil && at.expires.After(p.expires) {
		at = at.prev
	}
	p.prev = at
	if at == nil {
		p.next = sw.head
		sw.head = p
	} else {
		p.next = at.next
		at.next = p
	}
	if p.next != nil {
		p.next.prev = p
	} else {
		sw.tail = p
	}
}

func (sw *memSwarm) addToClass(p *memPeer) {
	p.idx = len(sw.classes[p.Class])
	sw.classes[p.Class] = append(sw.classes[p.Class], p)
}

func (sw *memSwarm) removeFromClass(p *memPeer) {
	cl := sw.classes[p.Class]
	last := cl[len(cl)-1]
	cl[p.idx], last.idx = last, p.idx
	cl[len(cl)-1] = nil
	sw.classes[p.Class] = cl[:len(cl)-1]
}

func (sw *memSwarm) remove(p *memPeer) {
	sw.unlink(p)
	sw.removeFromClass(p)
	delete(sw.peers, p.key)
}

// prune drops the peers expired at now: each is dropped once, so the cost
// is amortised over the announces that made them.
func (sw *memSwarm) prune(now time.Time) {
	for sw.head != nil && !now.Before(sw.head.expires) {
		sw.remove(sw.head)
	}
}

func (sw *memSwarm) counts() Counts {
	return Counts{
		Complete:   len(sw.classes[ClassComplete]) + len(sw.classes[ClassOrigin]),
		Incomplete: len(sw.classes[ClassIncomplete]) + len(sw.classes[ClassUnverified]),
		Downloaded: sw.downloaded,
	}
}

// liveCounts counts without pruning (for readers): the expired peers are
// at the head of the expiry order.
func (sw *memSwarm) liveCounts(now time.Time) (n [numClasses]int) {
	for c := range sw.classes {
		n[c] = len(sw.classes[c])
	}
	for p := sw.head; p != nil && !now.Before(p.expires); p = p.next {
		n[p.Class]--
	}
	return n
}

// sample appends up to want random peers of class c other than self.
func (sw *memSwarm) sample(rng *rand.Rand, out []Peer, c Class, want int, self peerKey) ([]Peer, int) {
	cl := sw.classes[c]
	if want <= 0 || len(cl) == 0 {
		return out, want
	}
	if len(cl) <= want+1 {
		for _, p := range cl {
			if want > 0 && p.key != self {
				out = append(out, p.Peer)
				want--
			}
		}
		return out, want
	}
	// Floyd's algorithm: want+1 distinct indices (one may be self) in
	// O(want).
	picked := make(map[int]struct{}, want+1)
	n := len(cl)
	for j := n - (want + 1); j < n; j++ {
		t := rng.IntN(j + 1)
		if _, dup := picked[t]; dup {
			t = j
		}
		picked[t] = struct{}{}
		if p := cl[t]; want > 0 && p.key != self {
			out = append(out, p.Peer)
			want--
		}
	}
	return out, want
}

func (s *MemoryStore) Announce(_ context.Context, now time.Time, in AnnounceInput) (Swarm, error) {
	sh := s.shard(in.InfoHash)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	sw := sh.swarms[in.InfoHash]
	if sw == nil {
		if in.Stopped {
			return Swarm{}, nil
		}
		sw = &memSwarm{peers: make(map[peerKey]*memPeer)}
		sh.swarms[in.InfoHash] = sw
	}
	sw.prune(now)
	self := keyOf(in.Peer)
	if p := sw.peers[self]; p != nil {
		if in.Stopped {
			sw.remove(p)
		} else {
			if p.Class != in.Peer.Class {
				sw.removeFromClass(p)
				p.Peer = in.Peer
				sw.addToClass(p)
			} else {
				p.Peer = in.Peer
			}
			sw.unlink(p)
			p.expires = now.Add(in.TTL)
			sw.link(p)
		}
	} else if !in.Stopped {
		p := &memPeer{Peer: in.Peer, key: self, expires: now.Add(in.TTL)}
		sw.peers[self] = p
		sw.addToClass(p)
		sw.link(p)
	}
	if in.Completed {
		sw.downloaded++
	}
	out := Swarm{Counts: sw.counts()}
	if in.Sample > 0 {
		out.Candidates = make([]Peer, 0, in.Sample+maxOriginCandidates)
		out.Candidates, _ = sw.sample(sh.rng, out.Candidates, ClassOrigin, maxOriginCandidates, self)
		want := in.Sample
		for _, c := range []Class{ClassComplete, ClassIncomplete, ClassUnverified} {
			out.Candidates, want = sw.sample(sh.rng, out.Candidates, c, want, self)
		}
	}
	if len(sw.peers) == 0 && sw.downloaded == 0 {
		delete(sh.swarms, in.InfoHash)
	}
	return out, nil
}

func (s *MemoryStore) Scrape(_ context.Context, now time.Time, ihs [][20]byte) ([]Counts, error) {
	out := make([]Counts, len(ihs))
	for i, ih := range ihs {
		sh := s.shard(ih)
		sh.mu.Lock()
		if sw := sh.swarms[ih]; sw != nil {
			n := sw.liveCounts(now)
			out[i] = Counts{
				Complete:   n[ClassComplete] + n[ClassOrigin],
				Incomplete: n[ClassIncomplete] + n[ClassUnverified],
				Downloaded: sw.downloaded,
			}
		}
		sh.mu.Unlock()
	}
	return out, nil
}

func (s *MemoryStore) Ping(context.Context) error { return nil }

func (s *MemoryStore) Close() error {
	s.once.Do(func() {
		close(s.stop)
		<-s.done
	})
	return nil
}

// Swarms walks the shards: the map of swarms is the index. Each shard is
// locked only while its swarms are counted, so announces to other shards
// go on meanwhile.
func (s *MemoryStore) Swarms(_ context.Context, now time.Time, limit int) ([]SwarmInfo, error) {
	var all []SwarmInfo
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for ih, sw := range sh.swarms {
			n := sw.liveCounts(now)
			info := SwarmInfo{InfoHash: ih, Downloaded: sw.downloaded,
				Complete: n[ClassComplete], Origin: n[ClassOrigin], Incomplete: n[ClassIncomplete] + n[ClassUnverified]}
			if info.Peers() > 0 {
				all = append(all, info)
			}
		}
		sh.mu.Unlock()
	}
	return topSwarms(all, limit), nil
}
