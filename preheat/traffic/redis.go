package traffic

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/preheat/internal/rstore"
)

// Redis is the Store of replicas sharing a Redis.
type Redis struct{ rstore.Base }

// NewRedis keeps traffic under prefix (one is given a {hash tag} when it
// has none): prefix + "traffic", "traffic:<minute>" and
// "traffic:node:<id>".
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	return &Redis{rstore.New(rdb, prefix)}
}

// trafficScript applies one report atomically, so two replicas hearing
// the same node never count its bytes twice.
//
//	KEYS[1] P traffic:node:<id>  hash start, reg, peers
//	KEYS[2] P traffic:<minute>   hash reg, peers
//	KEYS[3] P traffic            zset of minutes with traffic
//	ARGV    start, reg, peers, fresh (1/0), minute, keep ms
var trafficScript = redis.NewScript(`
local prev = redis.call('HMGET', KEYS[1], 'start', 'reg', 'peers')
local reg, peers = tonumber(ARGV[2]), tonumber(ARGV[3])
local dreg, dpeers = 0, 0
if prev[1] == ARGV[1] then
  dreg, dpeers = reg - tonumber(prev[2]), peers - tonumber(prev[3])
  if dreg < 0 or dpeers < 0 then dreg, dpeers = 0, 0 end
elseif ARGV[4] == '1' then
  dreg, dpeers = reg, peers
end
redis.call('HSET', KEYS[1], 'start', ARGV[1], 'reg', reg, 'peers', peers)
redis.call('PEXPIRE', KEYS[1], ARGV[6])
if dreg > 0 or dpeers > 0 then
  redis.call('HINCRBY', KEYS[2], 'reg', dreg)
  redis.call('HINCRBY', KEYS[2], 'peers', dpeers)
  redis.call('PEXPIRE', KEYS[2], ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[5])
end
return 1
`)

func (r *Redis) RecordTraffic(ctx context.Context, nodeID string, t NodeTraffic, at time.Time, keep time.Duration) error {
	minute := strconv.FormatInt(at.Unix()/60, 10)
	fresh := "0"
	if t.Fresh {
		fresh = "1"
	}
	err := trafficScript.Run(ctx, r.RDB, []string{r.Key("traffic", "node", nodeID), r.Key("traffic", minute), r.Key("traffic")},
		t.StartedAt.UTC().Format(time.RFC3339Nano), t.FromRegistry, t.FromPeers, fresh, minute, keep.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("redis: record traffic of %s: %w", nodeID, err)
	}
	// The minute index is trimmed here rather than by expiry: a zset
	// member cannot expire on its own.
	r.RDB.ZRemRangeByScore(ctx, r.Key("traffic"), "-inf", "("+strconv.FormatInt(at.Add(-keep).Unix()/60, 10))
	return nil
}

func (r *Redis) Traffic(ctx context.Context, since time.Time) ([]Point, error) {
	mins, err := r.RDB.ZRangeByScore(ctx, r.Key("traffic"), &redis.ZRangeBy{Min: strconv.FormatInt(since.Unix()/60, 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list traffic: %w", err)
	}
	out := []Point{}
	if len(mins) == 0 {
		return out, nil
	}
	cmds := make([]*redis.SliceCmd, len(mins))
	_, err = r.RDB.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range mins {
			cmds[i] = p.HMGet(ctx, r.Key("traffic", m), "reg", "peers")
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("redis: read traffic: %w", err)
	}
	for i, m := range mins {
		v := cmds[i].Val()
		if len(v) != 2 || v[0] == nil {
			continue // bucket expired before its index entry was trimmed
		}
		n, _ := strconv.ParseInt(m, 10, 64)
		reg, _ := strconv.ParseInt(fmt.Sprint(v[0]), 10, 64)
		peers, _ := strconv.ParseInt(fmt.Sprint(v[1]), 10, 64)
		out = append(out, Point{Minute: time.Unix(n*60, 0).UTC(), FromRegistry: reg, FromPeers: peers})
	}
	return out, nil
}
