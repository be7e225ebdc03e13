package preheat

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// NodeTraffic is one heartbeat's byte counters. They count from the agent
// process's start (StartedAt), so a restart resets them.
type NodeTraffic struct {
	StartedAt    time.Time
	FromRegistry int64
	FromPeers    int64
	// Fresh says the agent started recently enough that everything it
	// counted is new; otherwise a node seen for the first time (preheat
	// restarted, counters expired) only sets the baseline, instead of
	// dumping its whole history into the current minute.
	Fresh bool
}

// TrafficPoint is the bytes nodes fetched in one minute.
type TrafficPoint struct {
	Minute       time.Time `json:"minute"`
	FromRegistry int64     `json:"fromRegistry"`
	FromPeers    int64     `json:"fromPeers"`
}

// TrafficStore keeps registry egress vs bytes between nodes per minute,
// summed over every node, so any replica draws the same chart.
type TrafficStore interface {
	// RecordTraffic adds what the node fetched since its previous report
	// to the minute of at; buckets and baselines are kept for keep.
	RecordTraffic(ctx context.Context, nodeID string, t NodeTraffic, at time.Time, keep time.Duration) error
	// Traffic returns the minutes since since that saw traffic, oldest first.
	Traffic(ctx context.Context, since time.Time) ([]TrafficPoint, error)
}

// trafficFreshness: an agent that started this recently when preheat
// first hears of it has all its counted bytes fetched "now".
const trafficFreshness = 2 * time.Minute

// trafficDelta is what a report adds, given the previous one of the node
// (prevStart "" when there is none). Counters that went down without a
// new start (they never should) add nothing rather than a negative.
func trafficDelta(prevStart string, prevReg, prevPeers int64, cur NodeTraffic) (reg, peers int64) {
	start := cur.StartedAt.UTC().Format(time.RFC3339Nano)
	switch {
	case prevStart == start:
		reg, peers = cur.FromRegistry-prevReg, cur.FromPeers-prevPeers
		if reg < 0 || peers < 0 {
			return 0, 0
		}
		return reg, peers
	case cur.Fresh:
		return cur.FromRegistry, cur.FromPeers
	}
	return 0, 0
}

type memTraffic struct {
	base    map[string]memTrafficBase
	buckets map[int64][2]int64 // unix minute -> registry, peers
	keep    time.Duration
}

type memTrafficBase struct {
	start      string
	reg, peers int64
	at         time.Time
}

func (m *MemoryStore) RecordTraffic(_ context.Context, nodeID string, t NodeTraffic, at time.Time, keep time.Duration) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.traffic == nil {
		m.traffic = &memTraffic{base: map[string]memTrafficBase{}, buckets: map[int64][2]int64{}}
	}
	tr := m.traffic
	tr.keep = keep
	prev := tr.base[nodeID]
	reg, peers := trafficDelta(prev.start, prev.reg, prev.peers, t)
	tr.base[nodeID] = memTrafficBase{start: t.StartedAt.UTC().Format(time.RFC3339Nano), reg: t.FromRegistry, peers: t.FromPeers, at: at}
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

func (m *MemoryStore) Traffic(_ context.Context, since time.Time) ([]TrafficPoint, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := []TrafficPoint{}
	if m.traffic == nil {
		return out, nil
	}
	from := since.Unix() / 60
	for k, b := range m.traffic.buckets {
		if k >= from {
			out = append(out, TrafficPoint{Minute: time.Unix(k*60, 0).UTC(), FromRegistry: b[0], FromPeers: b[1]})
		}
	}
	sort.Slice(out, func(i, k int) bool { return out[i].Minute.Before(out[k].Minute) })
	return out, nil
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

func (r *RedisStore) RecordTraffic(ctx context.Context, nodeID string, t NodeTraffic, at time.Time, keep time.Duration) error {
	minute := strconv.FormatInt(at.Unix()/60, 10)
	fresh := "0"
	if t.Fresh {
		fresh = "1"
	}
	err := trafficScript.Run(ctx, r.rdb, []string{r.k("traffic", "node", nodeID), r.k("traffic", minute), r.k("traffic")},
		t.StartedAt.UTC().Format(time.RFC3339Nano), t.FromRegistry, t.FromPeers, fresh, minute, keep.Milliseconds()).Err()
	if err != nil {
		return fmt.Errorf("redis: record traffic of %s: %w", nodeID, err)
	}
	// The minute index is trimmed here rather than by expiry: a zset
	// member cannot expire on its own.
	r.rdb.ZRemRangeByScore(ctx, r.k("traffic"), "-inf", "("+strconv.FormatInt(at.Add(-keep).Unix()/60, 10))
	return nil
}

func (r *RedisStore) Traffic(ctx context.Context, since time.Time) ([]TrafficPoint, error) {
	mins, err := r.rdb.ZRangeByScore(ctx, r.k("traffic"), &redis.ZRangeBy{Min: strconv.FormatInt(since.Unix()/60, 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list traffic: %w", err)
	}
	out := []TrafficPoint{}
	if len(mins) == 0 {
		return out, nil
	}
	cmds := make([]*redis.SliceCmd, len(mins))
	_, err = r.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, m := range mins {
			cmds[i] = p.HMGet(ctx, r.k("traffic", m), "reg", "peers")
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
		out = append(out, TrafficPoint{Minute: time.Unix(n*60, 0).UTC(), FromRegistry: reg, FromPeers: peers})
	}
	return out, nil
}
