package preheat_test

import (
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/preheat"
	"github.com/shoalproject/shoal/preheat/storetest"
)

// Both Store implementations pass the one suite: the embedded mode cannot
// drift from production.
func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(*testing.T) storetest.Store { return preheat.NewMemoryStore() })
}

func TestRedisStore(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Store {
		rs := testenv.StartRedis(t)
		rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{rs.Addr}})
		t.Cleanup(func() { rdb.Close() })
		return preheat.NewRedisStore(rdb, "test:preheat:")
	})
}
