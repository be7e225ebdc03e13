package preheat

import (
	"context"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/preheat/internal/rstore"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/traffic"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// RedisStore keeps preheat state in Redis so several replicas share it:
// each part's Redis store (each passes its part's suite) under one prefix.
//
// Every key carries the same hash tag ("{…}" in the prefix) so all of them
// land in one cluster slot: the parts' Lua scripts touch several keys
// atomically, which Redis Cluster only allows within one slot.
//
// Keys (P = prefix; each part documents its own):
//
//	P node:<id>, nodes, pin:<id>                          nodes.Redis
//	P seq, job:<id>, jobs, active, dedupe:<key>,
//	  progress:<id>, lease:<id>                           jobs.Redis
//	P seen:<key>                                          webhook.Redis
//	P traffic, traffic:<minute>, traffic:node:<id>        traffic.Redis
type RedisStore struct {
	*redisNodes
	*redisJobs
	*redisDeliveries
	*redisTraffic
	rdb redis.UniversalClient
}

// Names for the embedded parts (each package calls its store Redis).
type (
	redisNodes      = nodes.Redis
	redisJobs       = jobs.Redis
	redisDeliveries = webhook.Redis
	redisTraffic    = traffic.Redis
)

// NewRedisStore wraps a client. prefix must contain a {hash tag}; one is
// added when it has none.
func NewRedisStore(rdb redis.UniversalClient, prefix string) *RedisStore {
	prefix = rstore.Prefix(prefix)
	return &RedisStore{
		redisNodes: nodes.NewRedis(rdb, prefix), redisJobs: jobs.NewRedis(rdb, prefix),
		redisDeliveries: webhook.NewRedis(rdb, prefix), redisTraffic: traffic.NewRedis(rdb, prefix),
		rdb: rdb,
	}
}

func (r *RedisStore) Ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: ping: %w", err)
	}
	return nil
}
