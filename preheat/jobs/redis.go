package jobs

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/preheat/internal/rstore"
)

// Redis is the Store, ProgressStore and LeaseStore of replicas sharing a
// Redis.
//
// Keys (P = prefix, with its {hash tag}):
//
//	P seq             job id counter (integer ids: Harbor wants them)
//	P job:<id>        JSON Job; expires `retention` after it finishes
//	P jobs            zset of job ids (score = id), pruned lazily
//	P active          set of unfinished job ids (resume scan)
//	P dedupe:<key>    id of the unfinished job for an identical request
//	P progress:<id>   hash node|digest -> JSON Progress, expires with the job
//	P lease:<id>      owner replica id, expires the lease TTL after renewal
type Redis struct{ rstore.Base }

// NewRedis keeps jobs under prefix (one is given a {hash tag} when it has
// none).
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	return &Redis{rstore.New(rdb, prefix)}
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

func (r *Redis) CreateJob(ctx context.Context, j *Job) (*Job, bool, error) {
	c := *j
	c.ID = 0
	b, err := json.Marshal(&c)
	if err != nil {
		return nil, false, fmt.Errorf("encode job: %w", err)
	}
	if !strings.HasPrefix(string(b), jobIDPrefix) {
		return nil, false, fmt.Errorf("encode job: id is not the first field")
	}
	dedupe, has := r.Key("dedupe", "none"), "0"
	if j.DedupeKey != "" {
		dedupe, has = r.Key("dedupe", j.DedupeKey), "1"
	}
	res, err := createScript.Run(ctx, r.RDB,
		[]string{dedupe, r.Key("seq"), r.Key("jobs"), r.Key("active")},
		string(b[len(jobIDPrefix):]), r.Key("job", ""), has).Slice()
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

func (r *Redis) GetJob(ctx context.Context, id int64) (*Job, error) {
	s, err := r.RDB.Get(ctx, r.Key("job", idStr(id))).Result()
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

func (r *Redis) ListJobs(ctx context.Context, limit int) ([]*Job, error) {
	if limit <= 0 {
		limit = 100
	}
	out := []*Job{}
	for start := int64(0); len(out) < limit; start += int64(limit) {
		ids, err := r.RDB.ZRevRange(ctx, r.Key("jobs"), start, start+int64(limit)-1).Result()
		if err != nil {
			return nil, fmt.Errorf("redis: list jobs: %w", err)
		}
		if len(ids) == 0 {
			break
		}
		keys := make([]string, len(ids))
		for i, id := range ids {
			keys[i] = r.Key("job", id)
		}
		vals, err := r.RDB.MGet(ctx, keys...).Result()
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
			r.RDB.ZRem(ctx, r.Key("jobs"), gone...)
			start -= int64(len(gone))
		}
	}
	return out, nil
}

func (r *Redis) UpdateJob(ctx context.Context, now time.Time, id int64, retention time.Duration, fn func(*Job) error) (*Job, error) {
	key := r.Key("job", idStr(id))
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
				if left := r.TTL(now.Add(retention)); left > 0 {
					p.Set(ctx, key, b, rstore.MS(left))
					p.PExpire(ctx, r.Key("progress", idStr(id)), rstore.MS(left))
				} else {
					p.Del(ctx, key, r.Key("progress", idStr(id))) // retention over already
				}
				p.SRem(ctx, r.Key("active"), idStr(id))
				if j.DedupeKey != "" {
					p.Del(ctx, r.Key("dedupe", j.DedupeKey))
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
		err := r.RDB.Watch(ctx, txf, key)
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

func (r *Redis) ActiveJobs(ctx context.Context) ([]int64, error) {
	ss, err := r.RDB.SMembers(ctx, r.Key("active")).Result()
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
	sort.Slice(out, func(i, k int) bool { return out[i] < out[k] })
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

func (r *Redis) SetProgress(ctx context.Context, now time.Time, jobID int64, p Progress) error {
	p.UpdatedAt = now
	b, err := json.Marshal(p)
	if err != nil {
		return fmt.Errorf("encode progress: %w", err)
	}
	n, err := progressScript.Run(ctx, r.RDB,
		[]string{r.Key("job", idStr(jobID)), r.Key("progress", idStr(jobID))},
		ProgressKey(p.NodeID, p.Digest), b).Int()
	if err != nil {
		return fmt.Errorf("redis: set progress job %d: %w", jobID, err)
	}
	if n == 0 {
		return fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	return nil
}

func (r *Redis) ListProgress(ctx context.Context, jobID int64) ([]Progress, error) {
	n, err := r.RDB.Exists(ctx, r.Key("job", idStr(jobID))).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: job %d: %w", jobID, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("job %d: %w", jobID, ErrNotFound)
	}
	m, err := r.RDB.HGetAll(ctx, r.Key("progress", idStr(jobID))).Result()
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
	SortProgress(out)
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

func (r *Redis) AcquireLease(ctx context.Context, now time.Time, jobID int64, owner string, ttl time.Duration) (bool, error) {
	n, err := leaseScript.Run(ctx, r.RDB, []string{r.Key("lease", idStr(jobID))}, owner, r.TTL(now.Add(ttl))).Int()
	if err != nil {
		return false, fmt.Errorf("redis: lease job %d: %w", jobID, err)
	}
	return n == 1, nil
}

func (r *Redis) ReleaseLease(ctx context.Context, jobID int64, owner string) error {
	if err := releaseScript.Run(ctx, r.RDB, []string{r.Key("lease", idStr(jobID))}, owner).Err(); err != nil && !errors.Is(err, redis.Nil) {
		return fmt.Errorf("redis: release lease job %d: %w", jobID, err)
	}
	return nil
}

func idStr(id int64) string { return strconv.FormatInt(id, 10) }
