package preheat

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/metrics/metricstest"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/testenv"
)

// Three agents in two groups; only the targeted group gets the blobs; a
// repeat preheat on those nodes is served from cache (registry egress 0).
func TestJobLifecycleOnlyTargetGroup(t *testing.T) {
	rs := testenv.StartRedis(t)
	reg := startRegistry(t)
	img := reg.push(t, "lib/app:v1", 64<<10, 3)
	want := blobDigests(t, img)

	cfg := testConfig(reg.URL)
	r := startReplica(t, cfg, redisStore(t, rs.Addr))
	a1 := startAgent(t, "a1", "zone-a")
	a2 := startAgent(t, "a2", "zone-a")
	b1 := startAgent(t, "b1", "zone-b")
	for _, a := range []*testAgent{a1, a2, b1} {
		heartbeat(t, r.URL, a.ID, a.URL(), a.Group)
	}

	var groups struct{ Groups []GroupView }
	call(t, "GET", r.URL+"/api/v1/groups", nil, nil, &groups)
	if len(groups.Groups) != 2 || groups.Groups[0].Name != "zone-a" || groups.Groups[0].Alive != 2 {
		t.Fatalf("groups = %+v", groups.Groups)
	}

	var created JobView
	if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/app:v1", Groups: []string{"zone-a"}}, &created); code != 201 {
		t.Fatalf("create: %d %+v", code, created)
	}
	if len(created.Blobs) != len(want) {
		t.Fatalf("job lists %d blobs, image has %d", len(created.Blobs), len(want))
	}
	v := waitJob(t, r.URL, created.ID, StateSuccess, 20*time.Second)
	if len(v.Progress) != 2*len(want) {
		t.Fatalf("per node per blob progress: %d entries, want %d", len(v.Progress), 2*len(want))
	}
	for _, p := range v.Progress {
		if p.State != StateSuccess || p.Source != "http" || p.BytesFromRegistry <= 0 || !strings.HasPrefix(p.NodeID, "a") {
			t.Fatalf("progress %+v", p)
		}
	}
	if len(v.GroupProgress) != 1 || v.GroupProgress[0].Group != "zone-a" || v.GroupProgress[0].Succeeded != 2*len(want) {
		t.Fatalf("group progress %+v", v.GroupProgress)
	}
	for _, a := range []*testAgent{a1, a2} {
		c := a.cached(t)
		for _, d := range want {
			if !c[d] {
				t.Fatalf("%s cache lacks %s", a.ID, d)
			}
		}
	}
	if n := len(b1.cached(t)); n != 0 || b1.fetches.Load() != 0 {
		t.Fatalf("untargeted b1 got %d blobs / %d fetches", n, b1.fetches.Load())
	}

	// Preheating again after completion is a new job, served from the caches.
	egress := reg.blobBytes.Load()
	var again JobView
	call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/app:v1", Groups: []string{"zone-a"}}, &again)
	if again.ID == created.ID {
		t.Fatal("finished job was reused")
	}
	v = waitJob(t, r.URL, again.ID, StateSuccess, 20*time.Second)
	for _, p := range v.Progress {
		if p.Source != "cache" {
			t.Fatalf("second preheat not from cache: %+v", p)
		}
	}
	if d := reg.blobBytes.Load() - egress; d != 0 {
		t.Fatalf("registry blob egress on cached nodes = %d, want 0", d)
	}

	// Metrics reflect it.
	resp, err := http.Get(r.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	body := string(raw)
	for _, s := range []string{`shoal_preheat_jobs{state="SUCCESS"} 2`, `shoal_preheat_bytes_total{source="registry"}`, "shoal_preheat_job_duration_seconds_count 2"} {
		if !strings.Contains(body, s) {
			t.Errorf("metrics lack %q", s)
		}
	}
	// Every family exists now that jobs ran: all must be documented.
	metricstest.Documented(t, "preheat", r.svc.metrics.reg)

	var health httpx.HealthReport
	if code := call(t, "GET", r.URL+"/healthz", nil, nil, &health); code != 200 || health.Component != "preheat" || health.Checks["store"].Status != "ok" {
		t.Fatalf("healthz %d %+v", code, health)
	}
	rs.Kill()
	health = httpx.HealthReport{}
	if code := call(t, "GET", r.URL+"/healthz", nil, nil, &health); code != 503 || health.Status != "fail" || health.Checks["store"].Error == "" {
		t.Fatalf("healthz with redis down = %d %+v, want 503 and the store failing", code, health)
	}
}

// The preheat service stops mid-job; a new replica on the same Redis
// resumes and completes it. While it runs, both replicas show the job.
func TestRestartMidJobAndTwoReplicas(t *testing.T) {
	rs := testenv.StartRedis(t)
	reg := startRegistry(t)
	img := reg.push(t, "lib/slow:v1", 16<<10, 4)
	want := blobDigests(t, img)
	cfg := testConfig(reg.URL)
	cfg.AgentConcurrency = 1

	a := startAgent(t, "n1", "g")
	a.gate = make(chan struct{})
	a.started = make(chan string, 100)
	r1 := startReplica(t, cfg, redisStore(t, rs.Addr))
	heartbeat(t, r1.URL, a.ID, a.URL(), a.Group)
	var j JobView
	if code := call(t, "POST", r1.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/slow:v1"}, &j); code != 201 {
		t.Fatalf("create %d", code)
	}
	<-a.started
	a.gate <- struct{}{} // first blob completes
	<-a.started          // second is in flight when the replica goes away

	r2 := startReplica(t, cfg, redisStore(t, rs.Addr))
	var v1, v2 JobView
	call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", r1.URL, j.ID), nil, nil, &v1)
	call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", r2.URL, j.ID), nil, nil, &v2)
	if v1.Job == nil || v2.Job == nil || v1.ID != v2.ID || v2.State != StateRunning || v2.Owner != r1.svc.ID() {
		t.Fatalf("replicas disagree: %+v vs %+v", v1.Job, v2.Job)
	}
	// Identical request on the other replica while running: same job.
	var dup JobView
	if code := call(t, "POST", r2.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/slow:v1"}, &dup); code != 200 || dup.ID != j.ID {
		t.Fatalf("dedupe across replicas: %d id %d want %d", code, dup.ID, j.ID)
	}

	r1.stop()     // stop replica 1 mid-job
	close(a.gate) // agent now answers everything
	v := waitJob(t, r2.URL, j.ID, StateSuccess, 20*time.Second)
	if v.Owner != r2.svc.ID() {
		t.Fatalf("owner = %s, want replica 2", v.Owner)
	}
	if len(v.Progress) != len(want) {
		t.Fatalf("progress %+v", v.Progress)
	}
	if c := a.cached(t); len(c) != len(want) {
		t.Fatalf("cache has %d blobs, want %d", len(c), len(want))
	}
}

// Cancel from any replica stops dispatch; offline agents are reported.
func TestCancelAndOfflineAgent(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/c:v1", 4<<10, 2)
	cfg := testConfig(reg.URL)
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "n1", "g")
	a.gate = make(chan struct{})
	heartbeat(t, r.URL, a.ID, a.URL(), "g")
	var j JobView
	call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/c:v1"}, &j)
	waitJob(t, r.URL, j.ID, StateRunning, 5*time.Second)
	var c Job
	if code := call(t, "DELETE", fmt.Sprintf("%s/api/v1/jobs/%d", r.URL, j.ID), nil, nil, &c); code != 200 || c.State != StateCanceled {
		t.Fatalf("cancel: %d %+v", code, c)
	}
	if code := call(t, "DELETE", fmt.Sprintf("%s/api/v1/jobs/%d", r.URL, j.ID), nil, nil, &map[string]any{}); code != 409 {
		t.Fatalf("second cancel = %d, want 409", code)
	}
	close(a.gate)
	time.Sleep(200 * time.Millisecond)
	v := waitJob(t, r.URL, j.ID, StateCanceled, time.Second)
	if v.Error == "" {
		t.Fatal("canceled job has no reason")
	}

	// An agent that registered and then vanished: reported, not waited on.
	dead := startAgent(t, "gone", "h")
	heartbeat(t, r.URL, dead.ID, dead.URL(), "h")
	dead.srv.Close()
	start := time.Now()
	var j2 JobView
	call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/c:v1", Groups: []string{"h"}}, &j2)
	v = waitJob(t, r.URL, j2.ID, StateFailure, 5*time.Second)
	if time.Since(start) > 3*time.Second || !strings.Contains(v.Error, "agent unreachable") {
		t.Fatalf("offline agent: %s after %s", v.Error, time.Since(start))
	}
	// Node with lapsed heartbeat: marked offline without a fetch attempt.
	// Its heartbeat is dated two TTLs ago: lapsed, and not yet forgotten
	// (that happens after nodes.ForgetFactor TTLs), however slow the machine.
	_ = r.svc.store.PutNode(bg, time.Now().Add(-2*time.Minute), Node{Heartbeat: nodeapi.Heartbeat{ID: "late", Address: "http://127.0.0.1:1", Groups: []string{"k"}}}, time.Minute)
	// Only that node in the group: known to fail, so refused at once.
	var e map[string]string
	if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/c:v1", Groups: []string{"k"}}, &e); code != 422 || !strings.Contains(e["error"], "no target nodes") {
		t.Fatalf("job for a group with only a lapsed node: %d %v, want 422 no target nodes", code, e)
	}
	live := startAgent(t, "k-live", "k")
	heartbeat(t, r.URL, live.ID, live.URL(), "k")
	var j3 JobView
	call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/c:v1", Groups: []string{"k"}}, &j3)
	v = waitJob(t, r.URL, j3.ID, StateFailure, 5*time.Second)
	if !strings.Contains(v.Error, "late") || !strings.Contains(v.Error, "node offline") || live.fetches.Load() != 3 { // config + 2 layers
		t.Fatalf("lapsed node error = %q, live node fetches %d", v.Error, live.fetches.Load())
	}
}

// Job timeout and per-fetch timeout: an agent that never answers fails the
// fetch after FetchTimeout, and the job fails at JobTimeout, with reasons.
func TestTimeouts(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/t:v1", 1<<10, 1)
	cfg := testConfig(reg.URL)
	cfg.FetchTimeout = 200 * time.Millisecond
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "n1", "g")
	a.gate = make(chan struct{}) // never opened: agent hangs
	heartbeat(t, r.URL, a.ID, a.URL(), "g")
	var j JobView
	call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/t:v1"}, &j)
	v := waitJob(t, r.URL, j.ID, StateFailure, 5*time.Second)
	if !strings.Contains(v.Error, "did not answer within") {
		t.Fatalf("fetch timeout error = %q", v.Error)
	}

	cfg.FetchTimeout = 10 * time.Second
	cfg.JobTimeout = 300 * time.Millisecond
	r2 := startReplica(t, cfg, NewMemoryStore())
	heartbeat(t, r2.URL, a.ID, a.URL(), "g")
	start := time.Now()
	call(t, "POST", r2.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/t:v1"}, &j)
	v = waitJob(t, r2.URL, j.ID, StateFailure, 5*time.Second)
	if !strings.Contains(v.Error, "timed out") || time.Since(start) > 3*time.Second {
		t.Fatalf("job timeout: %q after %s", v.Error, time.Since(start))
	}
}
