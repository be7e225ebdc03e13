package tracker

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/internal/token"
)

// BenchmarkAnnounceHandler measures the handler alone (no network) on the
// in-memory store: 1000 swarms of up to 100 peers.
func BenchmarkAnnounceHandler(b *testing.B) {
	s, err := New(testConfig(), Deps{Store: NewMemoryStore(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	qs := benchQueries(s)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := httptest.NewRequest(http.MethodGet, "/announce", nil)
		r.URL.RawQuery = qs[i%len(qs)]
		s.handleAnnounce(httptest.NewRecorder(), r)
	}
}

// BenchmarkAnnounceHandlerRedis is the same over the Redis store, with
// parallel callers so batching has something to batch.
func BenchmarkAnnounceHandlerRedis(b *testing.B) {
	r := testenv.StartRedis(b)
	cfg := testConfig()
	cfg.Redis.Addrs = []string{r.Addr}
	cfg.RequestTimeout = time.Second
	s, err := New(cfg, Deps{})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	qs := benchQueries(s)
	var n atomic.Int64
	b.SetParallelism(8)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			r := httptest.NewRequest(http.MethodGet, "/announce", nil)
			r.URL.RawQuery = qs[int(n.Add(1))%len(qs)]
			s.handleAnnounce(httptest.NewRecorder(), r)
		}
	})
}

// benchQueries are announces for 1000 swarms of 100 peers each.
func benchQueries(s *Server) []string {
	var qs []string
	for i := 0; i < 1000; i++ {
		h := ih(byte(i))
		h[1], h[2] = byte(i>>8), byte(i)
		tok := s.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))
		for p := 0; p < 100; p++ {
			qs = append(qs, url.Values{"info_hash": {string(h[:])}, "peer_id": {fmt.Sprintf("-BM0001-%012d", p)},
				"port": {fmt.Sprint(10000 + p)}, "left": {"5"}, "token": {tok}}.Encode())
		}
	}
	return qs
}

// BenchmarkSelectPeers is the hand-out alone: 800 candidates (numwant 200
// sampled ×4 for a group) in four classes and two groups, limit 200, one
// pooled source per call as the announce handler takes it.
func BenchmarkSelectPeers(b *testing.B) {
	s, err := New(testConfig(), Deps{Store: NewMemoryStore(time.Hour)})
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	cands := benchCandidates(800)
	self := cands[0]
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			rng, _ := s.rngs.Get().(*rand.Rand)
			if rng == nil {
				rng = newRand()
			}
			selectPeers(cands, handOut{selfID: self.ID, selfAddr: self.Addr, group: "a", limit: 200, maxPerIP: 4, rng: rng})
			s.rngs.Put(rng)
		}
	})
}

func benchCandidates(n int) []Peer {
	cands := make([]Peer, n)
	for i := range cands {
		cands[i] = Peer{ID: pid(i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)}), 6881),
			Class: Class(i % int(numClasses)), Group: []string{"a", "b"}[i%2]}
	}
	return cands
}

// BenchmarkAnnounceSwarmSize is the handler on the memory store for a
// swarm of 100 and of 10,000 peers, numwant 50: the cost per announce
// follows numwant, not the swarm (compare the two in one run). The swarm
// is filled with the handler's TTL: the expiry list is kept in order by a
// search from its tail, O(1) when every announce has the same TTL.
func BenchmarkAnnounceSwarmSize(b *testing.B) {
	for _, size := range []int{100, 10000} {
		b.Run(fmt.Sprint(size), func(b *testing.B) {
			store := NewMemoryStore(time.Hour)
			s, err := New(testConfig(), Deps{Store: store})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			h := ih(42)
			for i := 0; i < size; i++ {
				p := Peer{ID: pid(i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 6881), Class: Class(i % 2)}
				if _, err := store.Announce(context.Background(), time.Now(), AnnounceInput{InfoHash: h, Peer: p, TTL: s.cfg.PeerTTL}); err != nil {
					b.Fatal(err)
				}
			}
			tok := s.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))
			qs := make([]string, 100)
			for i := range qs {
				qs[i] = url.Values{"info_hash": {string(h[:])}, "peer_id": {fmt.Sprintf("-BM0001-%012d", i)},
					"port": {fmt.Sprint(20000 + i)}, "left": {"5"}, "numwant": {"50"}, "token": {tok}}.Encode()
			}
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				r := httptest.NewRequest(http.MethodGet, "/announce", nil)
				r.URL.RawQuery = qs[i%len(qs)]
				s.handleAnnounce(httptest.NewRecorder(), r)
			}
		})
	}
}

// BenchmarkRedisAnnounce10k is the Redis store alone on one class of
// 10,000 live peers (the 10,000-node design point), sample 50, 32 callers,
// and reports redis-server's own CPU per announce (INFO cpu) next to the
// wall time: the figure the script's cost shows in.
func BenchmarkRedisAnnounce10k(b *testing.B) {
	r := testenv.StartRedis(b)
	client := redis.NewClient(&redis.Options{Addr: r.Addr})
	s := NewRedisStore(redis.NewClient(&redis.Options{Addr: r.Addr}), "bench:", 5*time.Second)
	defer s.Close()
	defer client.Close()
	ctx := context.Background()
	h := ih(9)
	now := time.Now()
	peer := func(i int) Peer {
		return Peer{ID: pid(i), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}), 6881), Class: ClassIncomplete}
	}
	var wg sync.WaitGroup
	for w := 0; w < 32; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; i < 10000; i += 32 {
				if _, err := s.Announce(ctx, now, AnnounceInput{InfoHash: h, Peer: peer(i), TTL: time.Hour}); err != nil {
					b.Error(err)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	cpu := func() float64 {
		info, err := client.Info(ctx, "cpu").Result()
		if err != nil {
			b.Fatal(err)
		}
		var total float64
		for _, l := range strings.Split(info, "\r\n") {
			for _, k := range []string{"used_cpu_user:", "used_cpu_sys:"} {
				if v, ok := strings.CutPrefix(l, k); ok {
					f, _ := strconv.ParseFloat(v, 64)
					total += f
				}
			}
		}
		return total
	}
	var n atomic.Int64
	c0 := cpu()
	b.ResetTimer()
	b.SetParallelism(16)
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			i := int(n.Add(1)) % 10000
			if _, err := s.Announce(ctx, time.Now(), AnnounceInput{InfoHash: h, Peer: peer(i), TTL: time.Hour, Sample: 50}); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric((cpu()-c0)/float64(b.N)*1e6, "redis-µs/op")
}
