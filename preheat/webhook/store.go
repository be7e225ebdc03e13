package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/preheat/internal/rstore"
)

// DeliveryStore remembers deliveries, so a redelivery does not start a
// second preheat.
type DeliveryStore interface {
	// MarkSeen records a delivery id until now + ttl; false when it was
	// seen before and has not expired (duplicate delivery).
	MarkSeen(ctx context.Context, now time.Time, key string, ttl time.Duration) (bool, error)
}

// seenKey is the fixed-size form of a delivery id: ids come from webhook
// senders, and a key sized by the sender would size the store.
func seenKey(id string) string {
	h := sha256.Sum256([]byte(id))
	return hex.EncodeToString(h[:])
}

// Memory is the single-process DeliveryStore.
type Memory struct {
	mu   sync.Mutex
	seen map[string]time.Time
	// sweep is the size of seen at which expired entries are next
	// dropped: twice what survived the last sweep, so the sweep costs
	// O(1) per MarkSeen and seen stays within twice the live ids.
	sweep int
}

// minSweep is the smallest size of the delivery id set worth sweeping.
const minSweep = 1024

// NewMemory returns an empty store.
func NewMemory() *Memory { return &Memory{seen: map[string]time.Time{}, sweep: minSweep} }

func (m *Memory) MarkSeen(_ context.Context, now time.Time, key string, ttl time.Duration) (bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	key = seenKey(key)
	if exp, ok := m.seen[key]; ok && now.Before(exp) {
		return false, nil
	}
	if len(m.seen) >= m.sweep {
		for k, exp := range m.seen {
			if !now.Before(exp) {
				delete(m.seen, k)
			}
		}
		m.sweep = max(2*len(m.seen), minSweep)
	}
	m.seen[key] = now.Add(ttl)
	return true, nil
}

// Redis is the DeliveryStore of replicas sharing a Redis: P seen:<sha256
// of the id>, expiring ttl after first sight (P = prefix, with its {hash
// tag}).
type Redis struct{ rstore.Base }

// NewRedis keeps delivery ids under prefix (one is given a {hash tag}
// when it has none).
func NewRedis(rdb redis.UniversalClient, prefix string) *Redis {
	return &Redis{rstore.New(rdb, prefix)}
}

func (r *Redis) MarkSeen(ctx context.Context, now time.Time, key string, ttl time.Duration) (bool, error) {
	k := r.Key("seen", seenKey(key))
	left := r.TTL(now.Add(ttl))
	if left == 0 {
		// A mark that would have lapsed already: only whether one stands.
		n, err := r.RDB.Exists(ctx, k).Result()
		if err != nil {
			return false, fmt.Errorf("redis: mark seen: %w", err)
		}
		return n == 0, nil
	}
	ok, err := r.RDB.SetNX(ctx, k, 1, rstore.MS(left)).Result()
	if err != nil {
		return false, fmt.Errorf("redis: mark seen: %w", err)
	}
	return ok, nil
}
