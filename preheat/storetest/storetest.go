// Package storetest is the suite every preheat.Store implementation passes
// (the in-memory store of `shoal run` and the Redis store of production), so
// that the embedded mode cannot drift from production and a new
// implementation knows what it must do.
package storetest

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat"
)

// Run runs every case against a fresh store from newStore (one per case:
// the cases count jobs and nodes, so they must not share state).
func Run(t *testing.T, newStore func(t *testing.T) preheat.Store) {
	cases := []struct {
		name string
		run  func(t *testing.T, s preheat.Store)
	}{
		{"NodeHeartbeatTTL", testNodeTTL},
		{"JobCRUDAndList", testJobCRUD},
		{"DedupeWhileRunning", testDedupe},
		{"ConcurrentDedupeCreatesOne", testConcurrentDedupe},
		{"UpdateAtomicAndTerminalSticky", testUpdate},
		{"ProgressPerNodePerBlob", testProgress},
		{"RetentionExpiresFinishedJobs", testRetention},
		{"Leases", testLeases},
		{"MarkSeen", testMarkSeen},
		{"EnrollPinsKeyRefusesReplay", testEnroll},
		{"TrafficPerMinute", testTraffic},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newStore(t)) })
	}
}

var bg = context.Background()

func testNodeTTL(t *testing.T, s preheat.Store) {
	ttl := 300 * time.Millisecond
	if err := s.PutNode(bg, preheat.Node{Heartbeat: nodeapi.Heartbeat{ID: "n1", Address: "http://127.0.0.1:1", Groups: []string{"a"}, CacheFreeBytes: 10}}, ttl); err != nil {
		t.Fatal(err)
	}
	if err := s.PutNode(bg, preheat.Node{Heartbeat: nodeapi.Heartbeat{ID: "n2", Address: "http://127.0.0.1:2", Groups: []string{"b"}}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	ns, err := s.ListNodes(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 2 || ns[0].ID != "n1" || !ns[0].Alive(time.Now()) || ns[0].CacheFreeBytes != 10 || ns[0].Groups[0] != "a" {
		t.Fatalf("nodes = %+v", ns)
	}
	time.Sleep(ttl + 50*time.Millisecond)
	ns, _ = s.ListNodes(bg)
	if len(ns) != 2 || ns[0].Alive(time.Now()) || !ns[1].Alive(time.Now()) {
		t.Fatalf("after TTL n1 should be listed dead, n2 alive: %+v", ns)
	}
	// A new heartbeat revives it.
	_ = s.PutNode(bg, preheat.Node{Heartbeat: nodeapi.Heartbeat{ID: "n1", Address: "http://127.0.0.1:1"}}, ttl)
	ns, _ = s.ListNodes(bg)
	if !ns[0].Alive(time.Now()) {
		t.Fatalf("heartbeat did not revive n1: %+v", ns[0])
	}
}

func newJob(key string) *preheat.Job {
	now := time.Now().UTC()
	return &preheat.Job{State: preheat.StatePending, Image: "127.0.0.1:5000/lib/x:1", Repository: "lib/x", Reference: "1",
		Blobs: []preheat.Blob{{Digest: "sha256:aa", Size: 3}}, DedupeKey: key, CreatedAt: now, UpdatedAt: now}
}

func testJobCRUD(t *testing.T, s preheat.Store) {
	if _, err := s.GetJob(bg, 42); !errors.Is(err, preheat.ErrNotFound) {
		t.Fatalf("GetJob(unknown) err = %v, want preheat.ErrNotFound", err)
	}
	var ids []int64
	for i := 0; i < 3; i++ {
		j, created, err := s.CreateJob(bg, newJob(fmt.Sprintf("k%d", i)))
		if err != nil || !created {
			t.Fatalf("create: %v created=%v", err, created)
		}
		if j.ID <= 0 {
			t.Fatalf("id = %d", j.ID)
		}
		ids = append(ids, j.ID)
	}
	if ids[0] == ids[1] || ids[1] == ids[2] {
		t.Fatalf("ids not unique: %v", ids)
	}
	got, err := s.GetJob(bg, ids[1])
	if err != nil || got.ID != ids[1] || got.Repository != "lib/x" || len(got.Blobs) != 1 || got.Blobs[0].Size != 3 {
		t.Fatalf("get = %+v, %v", got, err)
	}
	list, err := s.ListJobs(bg, 2)
	if err != nil || len(list) != 2 || list[0].ID != ids[2] || list[1].ID != ids[1] {
		t.Fatalf("list newest first limit 2 = %+v, %v", list, err)
	}
	act, _ := s.ActiveJobs(bg)
	if len(act) != 3 {
		t.Fatalf("active = %v", act)
	}
}

func testDedupe(t *testing.T, s preheat.Store) {
	a, created, _ := s.CreateJob(bg, newJob("same"))
	if !created {
		t.Fatal("first create not created")
	}
	b, created, err := s.CreateJob(bg, newJob("same"))
	if err != nil || created || b.ID != a.ID {
		t.Fatalf("identical request while pending: got id %d created=%v err=%v, want %d", b.ID, created, err, a.ID)
	}
	if _, err := s.UpdateJob(bg, a.ID, time.Minute, func(j *preheat.Job) error { j.State = preheat.StateSuccess; return nil }); err != nil {
		t.Fatal(err)
	}
	c, created, _ := s.CreateJob(bg, newJob("same"))
	if !created || c.ID == a.ID {
		t.Fatalf("after finish a new job is expected, got %d created=%v", c.ID, created)
	}
	act, _ := s.ActiveJobs(bg)
	if len(act) != 1 || act[0] != c.ID {
		t.Fatalf("active = %v, want [%d]", act, c.ID)
	}
}

func testConcurrentDedupe(t *testing.T, s preheat.Store) {
	var wg sync.WaitGroup
	ids := make([]int64, 10)
	for i := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			j, _, err := s.CreateJob(bg, newJob("race"))
			if err != nil {
				t.Error(err)
				return
			}
			ids[i] = j.ID
		}()
	}
	wg.Wait()
	for _, id := range ids {
		if id != ids[0] {
			t.Fatalf("concurrent identical creates gave different jobs: %v", ids)
		}
	}
}

func testUpdate(t *testing.T, s preheat.Store) {
	j, _, _ := s.CreateJob(bg, newJob(""))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateJob(bg, j.ID, time.Minute, func(j *preheat.Job) error {
				j.Blobs = append(j.Blobs, preheat.Blob{Digest: "sha256:x", Size: 1})
				return nil
			})
			if err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	got, _ := s.GetJob(bg, j.ID)
	if len(got.Blobs) != 9 {
		t.Fatalf("lost updates: %d blobs, want 9", len(got.Blobs))
	}
	abort := errors.New("abort")
	if _, err := s.UpdateJob(bg, j.ID, time.Minute, func(j *preheat.Job) error { j.State = preheat.StateFailure; return abort }); !errors.Is(err, abort) {
		t.Fatalf("aborted update err = %v", err)
	}
	if got, _ := s.GetJob(bg, j.ID); got.State != preheat.StatePending {
		t.Fatalf("aborted update was applied: %s", got.State)
	}
	if _, err := s.UpdateJob(bg, 9999, time.Minute, func(*preheat.Job) error { return nil }); !errors.Is(err, preheat.ErrNotFound) {
		t.Fatalf("update unknown err = %v", err)
	}
}

func testProgress(t *testing.T, s preheat.Store) {
	j, _, _ := s.CreateJob(bg, newJob(""))
	for _, p := range []preheat.Progress{
		{NodeID: "n2", Digest: "sha256:b", State: preheat.StateRunning},
		{NodeID: "n1", Digest: "sha256:a", State: preheat.StateSuccess, Source: "http", BytesFromRegistry: 5},
		{NodeID: "n2", Digest: "sha256:b", State: preheat.StateFailure, Error: "boom"},
	} {
		if err := s.SetProgress(bg, j.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := s.ListProgress(bg, j.ID)
	if err != nil || len(ps) != 2 {
		t.Fatalf("progress = %+v, %v", ps, err)
	}
	if ps[0].NodeID != "n1" || ps[0].BytesFromRegistry != 5 || ps[1].State != preheat.StateFailure || ps[1].Error != "boom" {
		t.Fatalf("progress = %+v", ps)
	}
	if err := s.SetProgress(bg, 9999, preheat.Progress{NodeID: "n"}); !errors.Is(err, preheat.ErrNotFound) {
		t.Fatalf("progress on unknown job err = %v", err)
	}
}

func testRetention(t *testing.T, s preheat.Store) {
	j, _, _ := s.CreateJob(bg, newJob("ret"))
	_ = s.SetProgress(bg, j.ID, preheat.Progress{NodeID: "n1", Digest: "sha256:a", State: preheat.StateSuccess})
	keep, _, _ := s.CreateJob(bg, newJob("keep"))
	if _, err := s.UpdateJob(bg, j.ID, 300*time.Millisecond, func(j *preheat.Job) error { j.State = preheat.StateCanceled; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetJob(bg, j.ID); err != nil || got.State != preheat.StateCanceled {
		t.Fatalf("finished job must stay visible during retention: %+v %v", got, err)
	}
	time.Sleep(400 * time.Millisecond)
	if _, err := s.GetJob(bg, j.ID); !errors.Is(err, preheat.ErrNotFound) {
		t.Fatalf("job should have expired: %v", err)
	}
	if _, err := s.ListProgress(bg, j.ID); !errors.Is(err, preheat.ErrNotFound) {
		t.Fatalf("progress should have expired: %v", err)
	}
	list, _ := s.ListJobs(bg, 10)
	if len(list) != 1 || list[0].ID != keep.ID {
		t.Fatalf("list after expiry = %+v", list)
	}
}

func testLeases(t *testing.T, s preheat.Store) {
	ok, err := s.AcquireLease(bg, 1, "a", 300*time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if ok, _ := s.AcquireLease(bg, 1, "b", time.Second); ok {
		t.Fatal("b took a held lease")
	}
	if ok, _ := s.AcquireLease(bg, 1, "a", 300*time.Millisecond); !ok {
		t.Fatal("owner could not renew")
	}
	time.Sleep(400 * time.Millisecond) // owner died: lease lapses
	if ok, _ := s.AcquireLease(bg, 1, "b", time.Second); !ok {
		t.Fatal("b could not take an expired lease")
	}
	_ = s.ReleaseLease(bg, 1, "a") // not the owner: no effect
	if ok, _ := s.AcquireLease(bg, 1, "a", time.Second); ok {
		t.Fatal("release by non-owner dropped b's lease")
	}
	_ = s.ReleaseLease(bg, 1, "b")
	if ok, _ := s.AcquireLease(bg, 1, "a", time.Second); !ok {
		t.Fatal("released lease not acquirable")
	}
}

func testMarkSeen(t *testing.T, s preheat.Store) {
	first, err := s.MarkSeen(bg, "ev1", 300*time.Millisecond)
	if err != nil || !first {
		t.Fatalf("first: %v %v", first, err)
	}
	if again, _ := s.MarkSeen(bg, "ev1", time.Second); again {
		t.Fatal("duplicate not detected")
	}
	time.Sleep(400 * time.Millisecond)
	if again, _ := s.MarkSeen(bg, "ev1", time.Second); !again {
		t.Fatal("seen mark did not expire")
	}
	if err := s.Ping(bg); err != nil {
		t.Fatal(err)
	}
}

func testEnroll(t *testing.T, s preheat.Store) {
	k1, _, _ := ed25519.GenerateKey(rand.Reader)
	k2, _, _ := ed25519.GenerateKey(rand.Reader)
	t0 := time.Unix(1_800_000_000, 123456789)
	keep := time.Minute
	if _, err := s.NodeKey(bg, "n1"); !errors.Is(err, preheat.ErrNotFound) {
		t.Fatalf("key before enrollment: %v", err)
	}
	if p, err := s.EnrollNode(bg, "n1", k1, t0, keep); err != nil || !p.Equal(k1) {
		t.Fatalf("first sight: %v", err)
	}
	if _, err := s.EnrollNode(bg, "n1", k1, t0.Add(time.Nanosecond), keep); err != nil {
		t.Fatalf("next heartbeat: %v", err)
	}
	for _, at := range []time.Time{t0.Add(time.Nanosecond), t0} {
		if _, err := s.EnrollNode(bg, "n1", k1, at, keep); !errors.Is(err, preheat.ErrReplay) {
			t.Fatalf("replayed %v: %v", at, err)
		}
	}
	if p, err := s.EnrollNode(bg, "n1", k2, t0.Add(time.Second), keep); !errors.Is(err, preheat.ErrKeyMismatch) || !p.Equal(k1) {
		t.Fatalf("other key: %v", err)
	}
	if k, err := s.NodeKey(bg, "n1"); err != nil || !k.Equal(k1) {
		t.Fatalf("pinned key after the attempt: %v", err)
	}
	if err := s.ForgetNode(bg, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ForgetNode(bg, "n1"); !errors.Is(err, preheat.ErrNotFound) {
		t.Fatalf("second forget: %v", err)
	}
	if _, err := s.EnrollNode(bg, "n1", k2, t0, keep); err != nil {
		t.Fatalf("re-enroll after forget: %v", err)
	}
	if _, err := s.EnrollNode(bg, "short", k1, t0, 100*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	if _, err := s.EnrollNode(bg, "short", k2, t0, time.Minute); err != nil {
		t.Fatalf("enrollment outlived its retention: %v", err)
	}
}

// Node reports sum into per-minute points.
func testTraffic(t *testing.T, s preheat.Store) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Minute).Add(10 * time.Second)
	started := now.Add(-30 * time.Second)
	rec := func(node string, at time.Time, reg, peers int64) {
		t.Helper()
		if err := s.RecordTraffic(ctx, node, preheat.NodeTraffic{StartedAt: started, FromRegistry: reg, FromPeers: peers, Fresh: true}, at, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	rec("a", now, 100, 0)
	rec("b", now, 0, 100)
	rec("a", now.Add(time.Second), 150, 10) // +50 reg, +10 peers
	rec("a", now.Add(time.Minute), 150, 40) // next minute: +30 peers
	rec("b", now.Add(time.Minute), 0, 100)  // nothing new
	pts, err := s.Traffic(ctx, now.Add(-time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	if len(pts) != 2 || pts[0].FromRegistry != 150 || pts[0].FromPeers != 110 || pts[1].FromRegistry != 0 || pts[1].FromPeers != 30 ||
		!pts[0].Minute.Equal(now.Truncate(time.Minute)) {
		t.Fatalf("points %+v", pts)
	}
	if pts, _ := s.Traffic(ctx, now.Add(time.Minute)); len(pts) != 1 {
		t.Fatalf("since filter: %+v", pts)
	}
}
