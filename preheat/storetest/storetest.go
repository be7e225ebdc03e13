// Package storetest is the suite every Store implementation passes
// (the in-memory store of `shoal run` and the Redis store of production), so
// that the embedded mode cannot drift from production and a new
// implementation knows what it must do. Each of Store's parts has its
// own suite, so an implementation of one part alone can be checked.
//
// No case sleeps: expiry is checked by writing with a now far enough in the
// past that the deadline it sets has already gone by.
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
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/traffic"
	"github.com/shoalproject/shoal/preheat/webhook"
)

type testCase[S any] struct {
	name string
	run  func(t *testing.T, s S)
}

// run runs each case against a fresh store (the cases count jobs and
// nodes, so they must not share state).
func run[S any](t *testing.T, newStore func(t *testing.T) S, cases []testCase[S]) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { c.run(t, newStore(t)) })
	}
}

// Store is every part of preheat's state (preheat.Store), named here so
// the suites depend on the parts' packages only.
type Store interface {
	nodes.Store
	nodes.KeyStore
	jobs.Store
	jobs.ProgressStore
	jobs.LeaseStore
	webhook.DeliveryStore
	traffic.Store
	Ping(ctx context.Context) error
}

// Run runs every part's suite against fresh stores from newStore.
func Run(t *testing.T, newStore func(t *testing.T) Store) {
	t.Run("Nodes", func(t *testing.T) { RunNodes(t, func(t *testing.T) nodes.Store { return newStore(t) }) })
	t.Run("Keys", func(t *testing.T) { RunKeys(t, func(t *testing.T) nodes.KeyStore { return newStore(t) }) })
	t.Run("Jobs", func(t *testing.T) { RunJobs(t, func(t *testing.T) JobAndProgress { return newStore(t) }) })
	t.Run("Leases", func(t *testing.T) { RunLeases(t, func(t *testing.T) jobs.LeaseStore { return newStore(t) }) })
	t.Run("Deliveries", func(t *testing.T) { RunDeliveries(t, func(t *testing.T) webhook.DeliveryStore { return newStore(t) }) })
	t.Run("Traffic", func(t *testing.T) { RunTraffic(t, func(t *testing.T) traffic.Store { return newStore(t) }) })
	t.Run("Ping", func(t *testing.T) {
		if err := newStore(t).Ping(bg); err != nil {
			t.Fatal(err)
		}
	})
}

// RunNodes is the suite of nodes.Store.
func RunNodes(t *testing.T, newStore func(t *testing.T) nodes.Store) {
	run(t, newStore, []testCase[nodes.Store]{{"HeartbeatTTL", testNodeTTL}})
}

// RunKeys is the suite of nodes.KeyStore.
func RunKeys(t *testing.T, newStore func(t *testing.T) nodes.KeyStore) {
	run(t, newStore, []testCase[nodes.KeyStore]{{"EnrollPinsKeyRefusesReplay", testEnroll}})
}

// JobAndProgress is what RunJobs checks: progress lives and expires with
// its job, so the two are one suite.
type JobAndProgress interface {
	jobs.Store
	jobs.ProgressStore
}

// RunJobs is the suite of jobs.Store and jobs.ProgressStore.
func RunJobs(t *testing.T, newStore func(t *testing.T) JobAndProgress) {
	run(t, newStore, []testCase[JobAndProgress]{
		{"JobCRUDAndList", testJobCRUD},
		{"DedupeWhileRunning", testDedupe},
		{"ConcurrentDedupeCreatesOne", testConcurrentDedupe},
		{"UpdateAtomicAndTerminalSticky", testUpdate},
		{"ProgressPerNodePerBlob", testProgress},
		{"RetentionExpiresFinishedJobs", testRetention},
	})
}

// RunLeases is the suite of jobs.LeaseStore.
func RunLeases(t *testing.T, newStore func(t *testing.T) jobs.LeaseStore) {
	run(t, newStore, []testCase[jobs.LeaseStore]{{"Leases", testLeases}})
}

// RunDeliveries is the suite of webhook.DeliveryStore.
func RunDeliveries(t *testing.T, newStore func(t *testing.T) webhook.DeliveryStore) {
	run(t, newStore, []testCase[webhook.DeliveryStore]{{"MarkSeen", testMarkSeen}})
}

// RunTraffic is the suite of traffic.Store.
func RunTraffic(t *testing.T, newStore func(t *testing.T) traffic.Store) {
	run(t, newStore, []testCase[traffic.Store]{{"TrafficPerMinute", testTraffic}})
}

var bg = context.Background()

func testNodeTTL(t *testing.T, s nodes.Store) {
	now := time.Now()
	ttl := time.Minute
	// n1's heartbeat is two TTLs old: dead, but listed (nodes are listed
	// for several TTLs after their last heartbeat).
	if err := s.PutNode(bg, now.Add(-2*ttl), nodes.Node{Heartbeat: nodeapi.Heartbeat{ID: "n1", Address: "http://127.0.0.1:1", Groups: []string{"a"}, CacheFreeBytes: 10}}, ttl); err != nil {
		t.Fatal(err)
	}
	if err := s.PutNode(bg, now, nodes.Node{Heartbeat: nodeapi.Heartbeat{ID: "n2", Address: "http://127.0.0.1:2", Groups: []string{"b"}}}, ttl); err != nil {
		t.Fatal(err)
	}
	// n3's heartbeat is so old that it is forgotten.
	if err := s.PutNode(bg, now.Add(-1000*ttl), nodes.Node{Heartbeat: nodeapi.Heartbeat{ID: "n3", Address: "http://127.0.0.1:3"}}, ttl); err != nil {
		t.Fatal(err)
	}
	ns, err := s.ListNodes(bg)
	if err != nil {
		t.Fatal(err)
	}
	if len(ns) != 2 || ns[0].ID != "n1" || ns[0].Alive(now) || !ns[1].Alive(now) || ns[0].CacheFreeBytes != 10 || ns[0].Groups[0] != "a" {
		t.Fatalf("want n1 dead and n2 alive, n3 forgotten: %+v", ns)
	}
	if !ns[1].LastSeen.Equal(now) || !ns[1].ExpiresAt.Equal(now.Add(ttl)) {
		t.Fatalf("n2 seen %v expires %v, want %v and %v", ns[1].LastSeen, ns[1].ExpiresAt, now, now.Add(ttl))
	}
	// A new heartbeat revives it.
	_ = s.PutNode(bg, now, nodes.Node{Heartbeat: nodeapi.Heartbeat{ID: "n1", Address: "http://127.0.0.1:1"}}, ttl)
	ns, _ = s.ListNodes(bg)
	if !ns[0].Alive(now) {
		t.Fatalf("heartbeat did not revive n1: %+v", ns[0])
	}
}

func newJob(key string) *jobs.Job {
	now := time.Now().UTC()
	return &jobs.Job{State: jobs.StatePending, Artifact: jobs.Artifact{Image: "127.0.0.1:5000/lib/x:1", Repository: "lib/x", Reference: "1"},
		Blobs: []jobs.Blob{{Digest: "sha256:aa", Size: 3}}, Bookkeeping: jobs.Bookkeeping{DedupeKey: key}, Times: jobs.Times{CreatedAt: now, UpdatedAt: now}}
}

func testJobCRUD(t *testing.T, s JobAndProgress) {
	if _, err := s.GetJob(bg, 42); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("GetJob(unknown) err = %v, want jobs.ErrNotFound", err)
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

func testDedupe(t *testing.T, s JobAndProgress) {
	a, created, _ := s.CreateJob(bg, newJob("same"))
	if !created {
		t.Fatal("first create not created")
	}
	b, created, err := s.CreateJob(bg, newJob("same"))
	if err != nil || created || b.ID != a.ID {
		t.Fatalf("identical request while pending: got id %d created=%v err=%v, want %d", b.ID, created, err, a.ID)
	}
	if _, err := s.UpdateJob(bg, time.Now(), a.ID, time.Minute, func(j *jobs.Job) error { j.State = jobs.StateSuccess; return nil }); err != nil {
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

func testConcurrentDedupe(t *testing.T, s JobAndProgress) {
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

func testUpdate(t *testing.T, s JobAndProgress) {
	j, _, _ := s.CreateJob(bg, newJob(""))
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateJob(bg, time.Now(), j.ID, time.Minute, func(j *jobs.Job) error {
				j.Blobs = append(j.Blobs, jobs.Blob{Digest: "sha256:x", Size: 1})
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
	if _, err := s.UpdateJob(bg, time.Now(), j.ID, time.Minute, func(j *jobs.Job) error { j.State = jobs.StateFailure; return abort }); !errors.Is(err, abort) {
		t.Fatalf("aborted update err = %v", err)
	}
	if got, _ := s.GetJob(bg, j.ID); got.State != jobs.StatePending {
		t.Fatalf("aborted update was applied: %s", got.State)
	}
	if _, err := s.UpdateJob(bg, time.Now(), 9999, time.Minute, func(*jobs.Job) error { return nil }); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("update unknown err = %v", err)
	}
}

func testProgress(t *testing.T, s JobAndProgress) {
	j, _, _ := s.CreateJob(bg, newJob(""))
	for _, p := range []jobs.Progress{
		{NodeID: "n2", Digest: "sha256:b", State: jobs.StateRunning},
		{NodeID: "n1", Digest: "sha256:a", State: jobs.StateSuccess, Source: "http", BytesFromRegistry: 5},
		{NodeID: "n2", Digest: "sha256:b", State: jobs.StateFailure, Error: "boom"},
	} {
		if err := s.SetProgress(bg, time.Now(), j.ID, p); err != nil {
			t.Fatal(err)
		}
	}
	ps, err := s.ListProgress(bg, j.ID)
	if err != nil || len(ps) != 2 {
		t.Fatalf("progress = %+v, %v", ps, err)
	}
	if ps[0].NodeID != "n1" || ps[0].BytesFromRegistry != 5 || ps[1].State != jobs.StateFailure || ps[1].Error != "boom" {
		t.Fatalf("progress = %+v", ps)
	}
	if err := s.SetProgress(bg, time.Now(), 9999, jobs.Progress{NodeID: "n"}); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("progress on unknown job err = %v", err)
	}
}

func testRetention(t *testing.T, s JobAndProgress) {
	now := time.Now()
	retention := time.Minute
	j, _, _ := s.CreateJob(bg, newJob("ret"))
	_ = s.SetProgress(bg, now, j.ID, jobs.Progress{NodeID: "n1", Digest: "sha256:a", State: jobs.StateSuccess})
	keep, _, _ := s.CreateJob(bg, newJob("keep"))
	_ = s.SetProgress(bg, now, keep.ID, jobs.Progress{NodeID: "n1", Digest: "sha256:a", State: jobs.StateSuccess})
	if _, err := s.UpdateJob(bg, now, keep.ID, retention, func(j *jobs.Job) error { j.State = jobs.StateSuccess; return nil }); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetJob(bg, keep.ID); err != nil || got.State != jobs.StateSuccess {
		t.Fatalf("finished job must stay visible during retention: %+v %v", got, err)
	}
	if ps, err := s.ListProgress(bg, keep.ID); err != nil || len(ps) != 1 {
		t.Fatalf("progress must stay with its job during retention: %+v %v", ps, err)
	}
	// Finished longer ago than retention: gone with its progress.
	if _, err := s.UpdateJob(bg, now.Add(-2*retention), j.ID, retention, func(j *jobs.Job) error { j.State = jobs.StateCanceled; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetJob(bg, j.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("job should have expired: %v", err)
	}
	if _, err := s.ListProgress(bg, j.ID); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("progress should have expired: %v", err)
	}
	list, _ := s.ListJobs(bg, 10)
	if len(list) != 1 || list[0].ID != keep.ID {
		t.Fatalf("list after expiry = %+v", list)
	}
}

func testLeases(t *testing.T, s jobs.LeaseStore) {
	now := time.Now()
	ttl := time.Minute
	ok, err := s.AcquireLease(bg, now, 1, "a", ttl)
	if err != nil || !ok {
		t.Fatalf("acquire: %v %v", ok, err)
	}
	if ok, _ := s.AcquireLease(bg, now, 1, "b", ttl); ok {
		t.Fatal("b took a held lease")
	}
	// The owner renews, then dies: its last renewal was two TTLs ago.
	if ok, _ := s.AcquireLease(bg, now.Add(-2*ttl), 1, "a", ttl); !ok {
		t.Fatal("owner could not renew")
	}
	if ok, _ := s.AcquireLease(bg, now, 1, "b", ttl); !ok {
		t.Fatal("b could not take an expired lease")
	}
	_ = s.ReleaseLease(bg, 1, "a") // not the owner: no effect
	if ok, _ := s.AcquireLease(bg, now, 1, "a", ttl); ok {
		t.Fatal("release by non-owner dropped b's lease")
	}
	_ = s.ReleaseLease(bg, 1, "b")
	if ok, _ := s.AcquireLease(bg, now, 1, "a", ttl); !ok {
		t.Fatal("released lease not acquirable")
	}
	if ok, _ := s.AcquireLease(bg, now, 2, "b", ttl); !ok {
		t.Fatal("leases of different jobs interfere")
	}
}

func testMarkSeen(t *testing.T, s webhook.DeliveryStore) {
	now := time.Now()
	ttl := time.Minute
	first, err := s.MarkSeen(bg, now, "ev1", ttl)
	if err != nil || !first {
		t.Fatalf("first: %v %v", first, err)
	}
	if again, _ := s.MarkSeen(bg, now, "ev1", ttl); again {
		t.Fatal("duplicate not detected")
	}
	// Seen two TTLs ago: the mark has expired.
	if first, _ := s.MarkSeen(bg, now.Add(-2*ttl), "ev2", ttl); !first {
		t.Fatal("first sight of ev2 counted as a duplicate")
	}
	if again, _ := s.MarkSeen(bg, now, "ev2", ttl); !again {
		t.Fatal("seen mark did not expire")
	}
}

func testEnroll(t *testing.T, s nodes.KeyStore) {
	k1, _, _ := ed25519.GenerateKey(rand.Reader)
	k2, _, _ := ed25519.GenerateKey(rand.Reader)
	t0 := time.Unix(1_800_000_000, 123456789)
	keep := time.Minute
	now := time.Now()
	if _, err := s.NodeKey(bg, "n1"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("key before enrollment: %v", err)
	}
	if p, err := s.EnrollNode(bg, now, "n1", k1, t0, keep); err != nil || !p.Equal(k1) {
		t.Fatalf("first sight: %v", err)
	}
	if _, err := s.EnrollNode(bg, now, "n1", k1, t0.Add(time.Nanosecond), keep); err != nil {
		t.Fatalf("next heartbeat: %v", err)
	}
	for _, at := range []time.Time{t0.Add(time.Nanosecond), t0} {
		if _, err := s.EnrollNode(bg, now, "n1", k1, at, keep); !errors.Is(err, nodes.ErrReplay) {
			t.Fatalf("replayed %v: %v", at, err)
		}
	}
	if p, err := s.EnrollNode(bg, now, "n1", k2, t0.Add(time.Second), keep); !errors.Is(err, nodes.ErrKeyMismatch) || !p.Equal(k1) {
		t.Fatalf("other key: %v", err)
	}
	if k, err := s.NodeKey(bg, "n1"); err != nil || !k.Equal(k1) {
		t.Fatalf("pinned key after the attempt: %v", err)
	}
	if err := s.ForgetNode(bg, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ForgetNode(bg, "n1"); !errors.Is(err, jobs.ErrNotFound) {
		t.Fatalf("second forget: %v", err)
	}
	if _, err := s.EnrollNode(bg, now, "n1", k2, t0, keep); err != nil {
		t.Fatalf("re-enroll after forget: %v", err)
	}
	// Pinned two retentions ago: the pin has lapsed, another key enrolls.
	if _, err := s.EnrollNode(bg, now.Add(-2*keep), "short", k1, t0, keep); err != nil {
		t.Fatal(err)
	}
	if _, err := s.EnrollNode(bg, now, "short", k2, t0, keep); err != nil {
		t.Fatalf("enrollment outlived its retention: %v", err)
	}
}

// Node reports sum into per-minute points.
func testTraffic(t *testing.T, s traffic.Store) {
	ctx := context.Background()
	now := time.Now().Truncate(time.Minute).Add(10 * time.Second)
	started := now.Add(-30 * time.Second)
	rec := func(node string, at time.Time, reg, peers int64) {
		t.Helper()
		if err := s.RecordTraffic(ctx, node, traffic.NodeTraffic{StartedAt: started, FromRegistry: reg, FromPeers: peers, Fresh: true}, at, time.Hour); err != nil {
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
