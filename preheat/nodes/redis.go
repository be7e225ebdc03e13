package nodes

import (
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/preheat/internal/rstore"
)

// Redis is the Store and KeyStore of replicas sharing a Redis.
//
// Keys (P = prefix, with its {hash tag}):
//
//	P node:<id>   JSON Node, expires ForgetFactor x heartbeat TTL
//	P nodes       set of node ids (pruned lazily)
//	P pin:<id>    hash k = node key (hex), t = last heartbeat (20-digit
//	              Unix ns); expires the enrollment retention after it
type Redis struct{ rstore.Base }

// NewRedis keeps nodes under prefix (one is given a {hash tag} when it
// has none).
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	return &Redis{rstore.New(rdb, prefix)}
}

func (r *Redis) PutNode(ctx context.Context, now time.Time, n Node, ttl time.Duration) error {
	n.LastSeen = now
	n.ExpiresAt = now.Add(ttl)
	b, err := json.Marshal(n)
	if err != nil {
		return fmt.Errorf("encode node %s: %w", n.ID, err)
	}
	_, err = r.RDB.TxPipelined(ctx, func(p redis.Pipeliner) error {
		if left := r.TTL(now.Add(ttl * ForgetFactor)); left > 0 {
			p.Set(ctx, r.Key("node", n.ID), b, rstore.MS(left))
		} else {
			p.Del(ctx, r.Key("node", n.ID)) // forgotten already
		}
		p.SAdd(ctx, r.Key("nodes"), n.ID)
		return nil
	})
	if err != nil {
		return fmt.Errorf("redis: store node %s: %w", n.ID, err)
	}
	return nil
}

func (r *Redis) ListNodes(ctx context.Context) ([]Node, error) {
	ids, err := r.RDB.SMembers(ctx, r.Key("nodes")).Result()
	if err != nil {
		return nil, fmt.Errorf("redis: list nodes: %w", err)
	}
	out := []Node{}
	if len(ids) == 0 {
		return out, nil
	}
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = r.Key("node", id)
	}
	vals, err := r.RDB.MGet(ctx, keys...).Result()
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
		r.RDB.SRem(ctx, r.Key("nodes"), gone...)
	}
	Sort(out)
	return out, nil
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

func (r *Redis) EnrollNode(ctx context.Context, now time.Time, id string, key ed25519.PublicKey, at time.Time, keep time.Duration) (ed25519.PublicKey, error) {
	res, err := enrollScript.Run(ctx, r.RDB, []string{r.Key("pin", id)},
		hex.EncodeToString(key), fmt.Sprintf("%020d", at.UnixNano()), r.TTL(now.Add(keep))).Slice()
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

func (r *Redis) NodeKey(ctx context.Context, id string) (ed25519.PublicKey, error) {
	s, err := r.RDB.HGet(ctx, r.Key("pin", id), "k").Result()
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

func (r *Redis) ForgetNode(ctx context.Context, id string) error {
	var n *redis.IntCmd
	_, err := r.RDB.TxPipelined(ctx, func(p redis.Pipeliner) error {
		n = p.Del(ctx, r.Key("pin", id), r.Key("node", id))
		p.SRem(ctx, r.Key("nodes"), id)
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
