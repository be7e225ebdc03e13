package preheat_test

import (
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"os"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/preheat"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/traffic"
)

var updateGolden = flag.Bool("update", false, "rewrite testdata goldens from this code")

// The Redis store's keys, their types, TTLs and contents are a format: an
// upgraded replica reads what the previous one wrote. The golden was
// written by the store as it was before its parts were split; every
// write path runs here and the keys it leaves must be the same.
func TestRedisStoreKeyLayout(t *testing.T) {
	ctx := context.Background()
	rs := testenv.StartRedis(t)
	rdb := redis.NewUniversalClient(&redis.UniversalOptions{Addrs: []string{rs.Addr}})
	t.Cleanup(func() { rdb.Close() })
	st := preheat.NewRedisStore(rdb, "test:preheat:")

	now := time.Now()
	at := time.Date(2026, 1, 2, 3, 4, 5, 6, time.UTC)
	key := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)).Public().(ed25519.PublicKey)
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(st.PutNode(ctx, now, nodes.Node{Heartbeat: nodeapi.Heartbeat{ID: "n1", Address: "https://127.0.0.1:1", Groups: []string{"a"}}}, time.Minute))
	_, err := st.EnrollNode(ctx, now, "n1", key, at, time.Hour)
	must(err)
	mk := func(dedupe string) *jobs.Job {
		j := &jobs.Job{State: jobs.StatePending, Blobs: []jobs.Blob{{Digest: "sha256:aa", Size: 3}}, Times: jobs.Times{CreatedAt: at, UpdatedAt: at}}
		j.Image, j.Registry, j.Repository, j.Reference, j.DedupeKey = "127.0.0.1:5000/lib/x:1", "http://127.0.0.1:5000", "lib/x", "1", dedupe
		return j
	}
	running, _, err := st.CreateJob(ctx, mk("k1"))
	must(err)
	done, _, err := st.CreateJob(ctx, mk("k2"))
	must(err)
	must(st.SetProgress(ctx, now, running.ID, jobs.Progress{NodeID: "n1", Digest: "sha256:aa", State: jobs.StateRunning}))
	must(st.SetProgress(ctx, now, done.ID, jobs.Progress{NodeID: "n1", Digest: "sha256:aa", State: jobs.StateSuccess, Size: 3}))
	_, err = st.UpdateJob(ctx, now, done.ID, time.Hour, func(j *jobs.Job) error { j.State = jobs.StateSuccess; return nil })
	must(err)
	_, err = st.AcquireLease(ctx, now, running.ID, "replica-a", time.Minute)
	must(err)
	_, err = st.MarkSeen(ctx, now, "dist:e1", time.Hour)
	must(err)
	must(st.RecordTraffic(ctx, "n1", traffic.NodeTraffic{StartedAt: at, FromRegistry: 5, FromPeers: 7, Fresh: true}, at, 6*time.Hour))

	got := dumpRedis(t, rdb)
	const golden = "testdata/redis-keys.golden"
	if *updateGolden {
		must(os.WriteFile(golden, []byte(got), 0o644))
	}
	want, err := os.ReadFile(golden)
	must(err)
	if got != string(want) {
		t.Fatalf("Redis key layout changed; an upgraded replica would not read the old data.\ngot:\n%s\nwant:\n%s", got, want)
	}
}

// times are written from the wall clock; the golden keeps their place.
var wallTime = regexp.MustCompile(`\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)`)

// dumpRedis is every key, sorted, with its type, whether it expires, and
// its contents.
func dumpRedis(t *testing.T, rdb redis.UniversalClient) string {
	ctx := context.Background()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		typ := rdb.Type(ctx, k).Val()
		ttl := rdb.PTTL(ctx, k).Val()
		fmt.Fprintf(&b, "%s %s expires=%v\n", k, typ, ttl > 0)
		var lines []string
		switch typ {
		case "string":
			lines = []string{rdb.Get(ctx, k).Val()}
		case "hash":
			for f, v := range rdb.HGetAll(ctx, k).Val() {
				lines = append(lines, f+" = "+v)
			}
		case "set":
			lines = rdb.SMembers(ctx, k).Val()
		case "zset":
			for _, z := range rdb.ZRangeWithScores(ctx, k, 0, -1).Val() {
				lines = append(lines, fmt.Sprintf("%v %v", z.Member, z.Score))
			}
		}
		sort.Strings(lines)
		for _, l := range lines {
			l = wallTime.ReplaceAllStringFunc(l, func(ts string) string {
				if strings.HasPrefix(ts, "2026-01-02T03:04:05") {
					return ts // the fixed times the test wrote
				}
				return "<now>"
			})
			fmt.Fprintf(&b, "  %s\n", l)
		}
	}
	return b.String()
}
