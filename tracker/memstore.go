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
type MemoryStore struct {
	shards [memShards]memShard
	stop   chan struct{}
	done   chan struct{}
	once   sync.Once
}

type memShard struct {
	mu     sync.Mutex
	swarms map[[20]byte]*memSwarm
}

type memSwarm struct {
	peers      map[peerKey]memPeer
	downloaded int
	// expires is the latest expiry of any peer: past it the swarm is dead and
	// the sweeper drops it whole.
	expires time.Time
}

type memPeer struct {
	Peer
	expires time.Time
}

// NewMemoryStore returns an empty store whose sweeper drops dead swarms
// every sweep interval, so memory stays bounded even for swarms nobody
// announces to again.
func NewMemoryStore(sweep time.Duration) *MemoryStore {
	s := &MemoryStore{stop: make(chan struct{}), done: make(chan struct{})}
	for i := range s.shards {
		s.shards[i].swarms = make(map[[20]byte]*memSwarm)
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

// sweep drops swarms whose every peer has expired. Live swarms are pruned
// on their own announces.
func (s *MemoryStore) sweep(now time.Time) {
	for i := range s.shards {
		sh := &s.shards[i]
		sh.mu.Lock()
		for ih, sw := range sh.swarms {
			if !now.Before(sw.expires) {
				delete(sh.swarms, ih)
			}
		}
		sh.mu.Unlock()
	}
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
		sw = &memSwarm{peers: make(map[peerKey]memPeer)}
		sh.swarms[in.InfoHash] = sw
	}
	self := keyOf(in.Peer)
	if in.Stopped {
		delete(sw.peers, self)
	} else {
		exp := now.Add(in.TTL)
		sw.peers[self] = memPeer{Peer: in.Peer, expires: exp}
		if exp.After(sw.expires) {
			sw.expires = exp
		}
	}
	if in.Completed {
		sw.downloaded++
	}
	// One pass prunes, counts and reservoir-samples each class: O(swarm size),
	// which keeps the structure a plain map.
	var out Swarm
	var seen [numClasses]int
	var res [numClasses][]Peer
	for k, p := range sw.peers {
		if !now.Before(p.expires) {
			delete(sw.peers, k)
			continue
		}
		if p.Class == ClassIncomplete {
			out.Incomplete++
		} else {
			out.Complete++
		}
		if k == self || in.Sample <= 0 {
			continue
		}
		c := p.Class
		seen[c]++
		if len(res[c]) < in.Sample {
			res[c] = append(res[c], p.Peer)
		} else if j := rand.IntN(seen[c]); j < in.Sample {
			res[c][j] = p.Peer
		}
	}
	out.Downloaded = sw.downloaded
	budget := in.Sample
	for _, c := range []Class{ClassComplete, ClassOrigin, ClassIncomplete} {
		r := res[c]
		if len(r) > budget {
			r = r[:budget]
		}
		out.Candidates = append(out.Candidates, r...)
		budget -= len(r)
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
			for _, p := range sw.peers {
				if !now.Before(p.expires) {
					continue
				}
				if p.Class == ClassIncomplete {
					out[i].Incomplete++
				} else {
					out[i].Complete++
				}
			}
			out[i].Downloaded = sw.downloaded
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
			info := SwarmInfo{InfoHash: ih, Downloaded: sw.downloaded}
			for _, p := range sw.peers {
				if !now.Before(p.expires) {
					continue
				}
				switch p.Class {
				case ClassComplete:
					info.Complete++
				case ClassOrigin:
					info.Origin++
				default:
					info.Incomplete++
				}
			}
			if info.Peers() > 0 {
				all = append(all, info)
			}
		}
		sh.mu.Unlock()
	}
	return topSwarms(all, limit), nil
}
