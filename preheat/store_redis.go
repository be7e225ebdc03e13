package preheat

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/traffic"
)

// RedisStore keeps preheat state in Redis so several replicas share it.
//
// Every key carries the same hash tag ("{…}" in the prefix) so all of them
// land in one cluster slot: the Lua scripts below touch several keys
// atomically, which Redis Cluster only allows within one slot. Preheat state
// is small (jobs, nodes), so one slot is not a capacity concern.
//
// Keys (P = prefix):
//
//	P node:<id>       JSON Node, expires forgetFactor x heartbeat TTL
//	P nodes           set of node ids (pruned lazily)
//	P pin:<id>        hash k = node key (hex), t = last heartbeat (20-digit
//	                  Unix ns); expires the enrollment retention after it
//	P seq             job id counter (integer ids: Harbor wants them)
//	P job:<id>        JSON Job; expires `retention` after it finishes
//	P jobs            zset of job ids (score = id), pruned lazily
//	P active          set of unfinished job ids (resume scan)
//	P dedupe:<key>    id of the unfinished job for an identical request
//	P progress:<id>   hash node|digest -> JSON Progress, expires with the job
//	P lease:<id>      owner replica id, expires the lease TTL after renewal
//	P seen:<key>      webhook delivery ids, expire ttl after first sight
type RedisStore struct {
	*traffic.Redis
	// now is the clock deadlines are turned into TTLs by (time.Now).
	now    func() time.Time
	rdb    redis.UniversalClient
	prefix string
}

// NewRedisStore wraps a client. prefix must contain a {hash tag}; one is
// added when it has none.
func NewRedisStore(rdb redis.UniversalClient, prefix string) *RedisStore {
	if prefix == "" {
		prefix = "shoal:preheat:"
	}
	if !strings.Contains(prefix, "{") {
		prefix = "{" + strings.TrimSuffix(prefix, ":") + "}:"
	}
	return &RedisStore{Redis: traffic.NewRedis(rdb, prefix), now: time.Now, rdb: rdb, prefix: prefix}
}

// ttl is what is left until deadline, in milliseconds rounded up, by this
// process's clock: the caller computed deadline from the same clock, so
// Redis is given the duration the caller meant (PX, PEXPIRE), however far
// Redis's clock is from the replica's. A deadline already past is 0: the
// record is dropped rather than written.
func (r *RedisStore) ttl(deadline time.Time) int64 {
	d := deadline.Sub(r.now())
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

func ms(n int64) time.Duration { return time.Duration(n) * time.Millisecond }

func (r *RedisStore) k(parts ...string) string { return r.prefix + strings.Join(parts, ":") }
func idStr(id int64) string                    { return strconv.FormatInt(id, 10) }

func (r *RedisStore) PutNode(ctx context.Context, now time.Time, n Node, ttl time.Duration) error {
	n.LastSeen = now
	n.ExpiresAt = now.Add(ttl)
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode node %s: %w", n.ID, err)
	}
	_, err = r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if left := r.ttl(now.Add(ttl * nodes.ForgetFactor)); left > 0 {
			p.Set(ctx, r.k("node", n.ID), b, ms(left))
		} else {
			p.Del(ctx, r.k("node", n.ID)) // forgotten already
		}
		p.SAdd(ctx, r.k("nodes"), n.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: store node %s: %w", n.ID, err)
	}
	return nil
}

func (r *RedisStore) ListNodes(ctx context.Context) ([]Node, error) {
	ids, err := r.rdb.SMembers(ctx, r.k("nodes")).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list nodes: %w", err)
	}
	out := []Node{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.k("node", id)
	}
	vals, err := r.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: get nodes: %w", err)
	}
	var gone []any
	for i, v := range vals {
		s, ok := v.(string)
		if !ok {
			gone = append(gone, ids[i])
			continue
		}
		var n Node
		if err := json.Unmarshal([]byte(s), &n); err != nil {
			return nil, fmt.Errorf("decode node %s: %w", ids[i], err)
		}
		out = append(out, n)
	}
	if len(gone) > 0 {
		r.rdb.SRem(ctx, r.k("nodes"), gone...)
	}
	sortNodes(out)
	return out, nil
}

// createScript allocates the id and stores the job atomically, unless an
// unfinished job already holds the dedupe key. ARGV[1] is the job JSON
// minus its leading `{"id":0` (Job.ID is the first field), so the stored
// record carries the allocated id without a second round trip.
var createScript = redis.NewScript(`
if ARGV[3] == '1' then
  local cur = redis.call('GET', KEYS[1])
  if cur and redis.call('SISMEMBER', KEYS[4], cur) == 1 then
    local j = redis.call('GET', ARGV[2] .. cur)
    if j then return {0, j} end
  end
end
local id = redis.call('INCR', KEYS[2])
local j = '{"id":' .. id .. ARGV[1]
redis.call('SET', ARGV[2] .. id, j)
redis.call('ZADD', KEYS[3], id, id)
redis.call('SADD', KEYS[4], id)
if ARGV[3] == '1' then redis.call('SET', KEYS[1], id) end
return {1, j}
`)

const jobIDPrefix = `{"id":0`

func (r *RedisStore) CreateJob(ctx context.Context, j *Job) (*Job, bool, error) {
	c := *j
	c.ID = 0
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, false, fmt.Errorf("encode job: %w", err)
	}
	if !strings.HasPrefix(string(b), jobIDPrefix) {
		return nil, false, fmt.Errorf("encode job: id is not the first field")
	}
	dedupe, has := r.k("dedupe", "none"), "0"
	if j.DedupeKey != "" {
		dedupe, has = r.k("dedupe", j.DedupeKey), "1"
	}
	res, err := createScript.Run(ctx, r.rdb,
		[]string{dedupe, r.k("seq"), r.k("jobs"), r.k("active")},
		string(b[len(jobIDPrefix):]), r.k("job", ""), has).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("redis: create job: %w", err)
	}
	if len(res) != 2 {
		return nil, false, fmt.Errorf("redis: create job: unexpected reply %v", res)
	}
	created, _ := res[0].(int64)
	var out Job
	if err := json.Unmarshal([]byte(res[1].(string)), &out); err != nil {
		return nil, false, fmt.Errorf("decode job: %w", err)
	}
	return &out, created == 1, nil
}

func (r *RedisStore) GetJob(ctx context.Context, id int64) (*Job, error) {
	s, err := r.rdb.Get(ctx, r.k("job", idStr(id))).Result()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("job %d: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("redis: get job %d: %w", id, err)
	}
	var j Job
	if err := json.Unmarshal([]byte(s), &j); err != nil {
		return nil, fmt.Errorf("decode job %d: %w", id, err)
	}
	return &j, nil
}

func (r *RedisStore) ListJobs(ctx context.Context, limit int) ([]*Job, error) {
	if limit <= 0 {
		limit = 100
	}
	out := []*Job{}
	for start := int64(0); len(out) < limit; start += int64(limit) {
		ids, err := r.rdb.ZRevRange(ctx, r.k("jobs"), start, start+int64(limit)-1).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: list jobs: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = r.k("job", id)
		}
		vals, err := r.rdb.MGet(ctx, keys...).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: get jobs: %w", err)
		}
		var gone []any
		for i, v := range vals {
			s, ok := v.(string)
			if !ok {
				gone = append(gone, ids[i]) // expired after retention
				continue
			}
			var j Job
			if err := json.Unmarshal([]byte(s), &j); err != nil {
				return nil, fmt.Errorf("decode job %s: %w", ids[i], err)
			}
			if len(out) < limit {
				out = append(out, &j)
			}
		}
		if len(gone) > 0 {
			r.rdb.ZRem(ctx, r.k("jobs"), gone...)
			start -= int64(len(gone))
		}
	}
	return out, nil
}

func (r *RedisStore) UpdateJob(ctx context.Context, now time.Time, id int64, retention time.Duration, fn func(*Job) error) (*Job, error) {
	key := r.k("job", idStr(id))
	var out *Job
	txf := func(tx *redis.Tx) error {
		s, err := tx.Get(ctx, key).Result()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("job %d: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		var j Job
		if err := json.Unmarshal([]byte(s), &j); err != nil {
			return fmt.Errorf("decode job %d: %w", id, err)
		}
		wasTerminal := j.State.Terminal()
		if err := fn(&j); err != nil {
			return err
		}
		j.ID = id
		b, err := json.Marshal(&j)
		if err != nil {
			return fmt.Errorf("encode job %d: %w", id, err)
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			switch {
			case wasTerminal:
				p.Set(ctx, key, b, redis.KeepTTL)
			case j.State.Terminal():
				// The first transition to a terminal state releases the
				// dedupe key (it can only point at us: no identical job
				// could be created while we were active) and starts the
				// retention clock on the job and its progress.
				if left := r.ttl(now.Add(retention)); left > 0 {
					p.Set(ctx, key, b, ms(left))
					p.PExpire(ctx, r.k("progress", idStr(id)), ms(left))
				} else {
					p.Del(ctx, key, r.k("progress", idStr(id))) // retention over already
				}
				p.SRem(ctx, r.k("active"), idStr(id))
				if j.DedupeKey != "" {
					p.Del(ctx, r.k("dedupe", j.DedupeKey))
				}
			default:
				p.Set(ctx, key, b, 0)
			}
			return nil
		})
		out = &j
		return err
	}
	for attempt := 0; attempt < 50; attempt++ {
		err := r.rdb.Watch(ctx, txf, key)
		if errors.Is(err, redis.TxFailedErr) {
			continue // concurrent writer; re-read and re-apply
		}
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				return nil, err
			}
			return nil, fmt.Errorf("redis: update job %d: %w", id, err)
		}
		return out, nil
	}
	return nil, fmt.Errorf("redis: update job %d: too much contention", id)
}

func (r *RedisStore) ActiveJobs(ctx context.Context) ([]int64, error) {
	ss, err := r.rdb.SMembers(ctx, r.k("active")).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: active jobs: %w", err)
	}
	out := make([]int64, 0, len(ss))
	for _, s := range ss {
		id, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, id)
	}
	sortIDs(out)
	return out, nil
}

// progressScript writes one progress entry only while the job exists and
// gives the hash the job's remaining TTL, so a late write after the job
// finished cannot leave an immortal hash behind.
var progressScript = redis.NewScript(`
local t = redis.call('PTTL', KEYS[1])
if t == -2 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if t > 0 then redis.call('PEXPIRE', KEYS[2], t) end
return 1
`)

func (r *RedisStore) SetProgress(ctx context.Context, now time.Time, jobID int64, p Progress) error {
	p.UpdatedAt = now
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode progress: %w", err)
	}
	n, err := progressScript.Run(ctx, r.rdb,
		[]string{r.k("job", idStr(jobID)), r.k("progress", idStr(jobID))},
		progressField(p.NodeID, p.Digest), b).Int()
	if err != nil {
		return fmt.Errorf("redis: set progress job %d: %w", jobID, err)
	}
	if n == 0 {
		return fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	return nil
}

func (r *RedisStore) ListProgress(ctx context.Context, jobID int64) ([]Progress, error) {
	n, err := r.rdb.Exists(ctx, r.k("job", idStr(jobID))).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: job %d: %w", jobID, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	m, err := r.rdb.HGetAll(ctx, r.k("progress", idStr(jobID))).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: progress job %d: %w", jobID, err)
	}
	out := make([]Progress, 0, len(m))
	for f, v := range m {
		var p Progress
		if err := json.Unmarshal([]byte(v), &p); err != nil {
			return nil, fmt.Errorf("decode progress %s: %w", f, err)
		}
		out = append(out, p)
	}
	sortProgress(out)
	return out, nil
}

var leaseScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur == false or cur == ARGV[1] then
  if tonumber(ARGV[2]) > 0 then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  else
    redis.call('DEL', KEYS[1]) -- taken, and lapsed already
  end
  return 1
end
return 0
`)

var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
`)

func (r *RedisStore) AcquireLease(ctx context.Context, now time.Time, jobID int64, owner string, ttl time.Duration) (bool, error) {
	n, err := leaseScript.Run(ctx, r.rdb, []string{r.k("lease", idStr(jobID))}, owner, r.ttl(now.Add(ttl))).Int()
	if err != nil {
		return false, fmt.Errorf("redis: lease job %d: %w", jobID, err)
	}
	return n == 1, nil
}

func (r *RedisStore) ReleaseLease(ctx context.Context, jobID int64, owner string) error {
	if err := releaseScript.Run(ctx, r.rdb, []string{r.k("lease", idStr(jobID))}, owner).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis: release lease job %d: %w", jobID, err)
	}
	return nil
}

func (r *RedisStore) MarkSeen(ctx context.Context, now time.Time, key string, ttl time.Duration) (bool, error) {
	k := r.k("seen", seenKey(key))
	left := r.ttl(now.Add(ttl))
	if left == 0 {
		// A mark that would have lapsed already: only whether one stands.
		n, err := r.rdb.Exists(ctx, k).Result()
		if err != nil {
			return false, fmt.Errorf("redis: mark seen: %w", err)
		}
		return n == 0, nil
	}
	ok, err := r.rdb.SetNX(ctx, k, 1, ms(left)).Result()
	if err != nil {
		return false, fmt.Errorf("redis: mark seen: %w", err)
	}
	return ok, nil
}

func (r *RedisStore) Ping(ctx context.Context) error {
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("redis: ping: %w", err)
	}
	return nil
}

// enrollScript pins and advances a node's last heartbeat atomically.
// Timestamps are compared as fixed-width decimal strings: Lua numbers are
// doubles and would round Unix nanoseconds.
var enrollScript = redis.NewScript(`
local k = redis.call('HGET', KEYS[1], 'k')
if k and k ~= ARGV[1] then return {1, k} end
local t = redis.call('HGET', KEYS[1], 't')
if k and t and ARGV[2] <= t then return {2, k} end
redis.call('HSET', KEYS[1], 'k', ARGV[1], 't', ARGV[2])
if tonumber(ARGV[3]) > 0 then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('DEL', KEYS[1]) end
return {0, ARGV[1]}
`)

func (r *RedisStore) EnrollNode(ctx context.Context, now time.Time, id string, key ed25519.PublicKey, at time.Time, keep time.Duration) (ed25519.PublicKey, error) {
	res, err := enrollScript.Run(ctx, r.rdb, []string{r.k("pin", id)},
		hex.EncodeToString(key), fmt.Sprintf("%020d", at.UnixNano()), r.ttl(now.Add(keep))).Slice()
	if err != nil {
		return nil, fmt.Errorf("redis: enroll node %s: %w", id, err)
	}
	if len(res) != 2 {
		return nil, fmt.Errorf("redis: enroll node %s: unexpected answer", id)
	}
	code, _ := res[0].(int64)
	s, _ := res[1].(string)
	pinned, err := hex.DecodeString(s)
	if err != nil || len(pinned) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("redis: node %s: stored key is malformed", id)
	}
	switch code {
	case 1:
		return pinned, ErrKeyMismatch
	case 2:
		return pinned, ErrReplay
	}
	return pinned, nil
}

func (r *RedisStore) NodeKey(ctx context.Context, id string) (ed25519.PublicKey, error) {
	s, err := r.rdb.HGet(ctx, r.k("pin", id), "k").Result()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("redis: node %s key: %w", id, err)
	}
	key, err := hex.DecodeString(s)
	if err != nil || len(key) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("redis: node %s: stored key is malformed", id)
	}
	return key, nil
}

func (r *RedisStore) ForgetNode(ctx context.Context, id string) error {
	var n *redis.IntCmd
	_, err := r.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, r.k("pin", id), r.k("node", id))
		p.SRem(ctx, r.k("nodes"), id)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: forget node %s: %w", id, err)
	}
	if n.Val() == 0 {
		return ErrNotFound
	}
	return nil
}
