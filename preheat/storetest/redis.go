package storetest

import (
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/internal/testenv"
)

// Redis starts one real redis-server for t and returns what each case of
// a suite builds its store from: a client and a key prefix no other case
// uses, so the cases share the server but no state.
func Redis(t *testing.T) func(t *testing.T) (redis.UniversalClient, string) {
	t.Helper()
	rs := testenv.StartRedis(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{rs.Addr}})
	t.Cleanup(func() { rdb.Close() })
	var n atomic.Int64
	return func(*testing.T) (redis.UniversalClient, string) {
		return rdb, fmt.Sprintf("{test-%d}:", n.Add(1))
	}
}
