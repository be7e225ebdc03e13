// Package rstore is what preheat's Redis stores share: one key prefix
// carrying a {hash tag}, and deadlines handed to Redis as the time left
// until them.
package rstore

import (
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is the prefix of a store given none.
const DefaultPrefix = "shoal:preheat:"

// Prefix is prefix with a {hash tag}, one added when it has none, so that
// every key of the preheat store lands in one Redis Cluster slot: the Lua
// scripts touch several keys atomically, which a Cluster only allows
// within one slot. Preheat state is small, so one slot is no capacity
// concern. It is idempotent.
func Prefix(prefix string) string {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	if !strings.Contains(prefix, "{") {
		prefix = "{" + strings.TrimSuffix(prefix, ":") + "}:"
	}
	return prefix
}

// Base is a part's client, prefix and clock.
type Base struct {
	RDB    redis.UniversalClient
	prefix string
	// now is the clock deadlines are turned into TTLs by.
	now func() time.Time
}

// New is a Base over rdb whose keys start with Prefix(prefix).
func New(rdb redis.UniversalClient, prefix string) Base {
	return Base{RDB: rdb, prefix: Prefix(prefix), now: time.Now}
}

// Key is the key of parts joined by ":" under the prefix.
func (b Base) Key(parts ...string) string { return b.prefix + strings.Join(parts, ":") }

// TTL is what is left until deadline, in milliseconds rounded up, by this
// process's clock: the caller computed deadline from the same clock, so
// Redis is given the duration the caller meant (PX, PEXPIRE), however far
// Redis's clock is from the replica's. A deadline already past is 0: the
// record is dropped rather than written.
func (b Base) TTL(deadline time.Time) int64 {
	d := deadline.Sub(b.now())
	if d <= 0 {
		return 0
	}
	return int64((d + time.Millisecond - 1) / time.Millisecond)
}

// MS is n milliseconds.
func MS(n int64) time.Duration { return time.Duration(n) * time.Millisecond }
