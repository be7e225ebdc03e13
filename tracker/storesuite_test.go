package tracker_test

import (
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/tracker"
	"github.com/shoalproject/shoal/tracker/storetest"
)

// Both stores serve the read API.
var (
	_ tracker.Lister = (*tracker.MemoryStore)(nil)
	_ tracker.Lister = (*tracker.RedisStore)(nil)
)

func TestMemoryStoreSuite(t *testing.T) {
	storetest.Run(t, func(t *testing.T) tracker.Store {
		s := tracker.NewMemoryStore(time.Hour)
		t.Cleanup(func() { s.Close() })
		return s
	})
}

// TestRedisStoreSuite runs the suite on a real redis-server, one for the
// whole suite: each subtest's store gets a key prefix of its own, so they
// start empty as the suite asks.
func TestRedisStoreSuite(t *testing.T) {
	r := testenv.StartRedis(t)
	var n atomic.Int64
	storetest.Run(t, func(t *testing.T) tracker.Store {
		client := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{r.Addr}})
		s := tracker.NewRedisStore(client, fmt.Sprintf("suite%d:", n.Add(1)), time.Second)
		t.Cleanup(func() { s.Close() })
		return s
	})
}
