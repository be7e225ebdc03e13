package preheat

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/preheat/console"
)

// Each test here is a finding of issue 22 ("Secure by default,
// everywhere") replayed as the attacker did it; docs/security.md maps the
// claims to them.

// loadTestConfig writes yaml to a file and loads it as preheat would.
func loadTestConfig(t *testing.T, yaml string) (Config, error) {
	t.Helper()
	t.Setenv("SHOAL_CLUSTER_SECRET", testClusterSecret)
	p := filepath.Join(t.TempDir(), "preheat.yml")
	if err := os.WriteFile(p, []byte(yaml), 0o600); err != nil {
		t.Fatal(err)
	}
	return LoadConfig(p)
}

// Finding 1: with apiTokens set and no Harbor configured (the chart's
// defaults), the Harbor provider routes took jobs with no token and showed
// node names and addresses. Now they do not exist unless Harbor is
// configured; configuring Harbor's groups without its tokens is refused.
func TestAttackHarborRoutesOnlyWhenConfigured(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "library/busybox:latest", 1<<10, 1)
	cfg := testConfig(reg.URL)
	cfg.APITokens = config.NewTokens(secret.Generate())
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "n1", "")
	heartbeat(t, r.URL, a.ID, a.URL())
	body := fmt.Sprintf(`{"type":"preheat","args":{"type":"image","url":"%s/v2/library/busybox/manifests/latest"}}`, reg.URL)
	for _, c := range []struct{ method, path, body string }{
		{"POST", "/oapi/v1/jobs", body}, {"POST", "/preheats", `{"type":"image","url":"` + reg.URL + `/v2/library/busybox/manifests/latest"}`},
		{"GET", "/oapi/v1/jobs/1", ""}, {"GET", "/preheats/1", ""},
		{"POST", "/registry/notifications", `{"events":[]}`}, {"GET", "/_ping", ""}, {"GET", "/healthy", ""},
	} {
		var b any
		if c.body != "" {
			b = c.body
		}
		var e map[string]any
		if code := call(t, c.method, r.URL+c.path, nil, b, &e); code != http.StatusNotFound {
			t.Errorf("%s %s without Harbor configured: %d %v", c.method, c.path, code, e)
		}
	}
	if n := a.fetches.Load(); n != 0 {
		t.Fatalf("the node fetched %d blobs", n)
	}
	_, err := loadTestConfig(t, "apiTokens: ["+secret.Generate()+"]\nharbor:\n  clusters: {1: [a]}\n")
	if err == nil || !strings.Contains(err.Error(), "harbor.tokens") {
		t.Fatalf("harbor clusters without tokens: %v", err)
	}
	_, err = loadTestConfig(t, "addr: 127.0.0.1:8002\nharbor: {auth: none, tokens: ["+secret.Generate()+"]}\n")
	if err == nil {
		t.Fatal("harbor.auth none with tokens accepted")
	}
	_, err = loadTestConfig(t, "addr: 0.0.0.0:8002\napiTokens: ["+secret.Generate()+"]\nharbor: {auth: none}\n")
	if err == nil || !strings.Contains(err.Error(), "loopback") {
		t.Fatalf("harbor.auth none beyond loopback: %v", err)
	}
}

// Finding 2: `apiTokens: [env:SHOAL_PREHEAT_TOKEN]` compared the literal
// reference, and weak tokens started. Now every token resolves when the
// file loads and weak ones stop the start.
func TestAttackTokenReferencesResolve(t *testing.T) {
	tok, harborTok := secret.Generate(), secret.Generate()
	t.Setenv("SHOAL_PREHEAT_TOKEN", tok)
	t.Setenv("SHOAL_HARBOR_TOKEN", harborTok)
	cfg, err := loadTestConfig(t, "apiTokens: [env:SHOAL_PREHEAT_TOKEN]\nharbor:\n  tokens: [env:SHOAL_HARBOR_TOKEN]\n")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Registry = "http://127.0.0.1:1"
	cfg.HeartbeatTTL, cfg.Log.Level = 5*time.Second, "warn"
	r := startReplica(t, cfg, NewMemoryStore())
	for _, c := range []struct {
		path, bearer string
		want         int
	}{
		{"/api/v1/jobs", tok, 200}, {"/api/v1/jobs", "env:SHOAL_PREHEAT_TOKEN", 401},
		{"/_ping", harborTok, 200}, {"/_ping", "env:SHOAL_HARBOR_TOKEN", 401}, {"/_ping", tok, 401},
	} {
		if code := call(t, "GET", r.URL+c.path, map[string]string{"Authorization": "Bearer " + c.bearer}, nil, nil); code != c.want {
			t.Errorf("GET %s with %q: %d, want %d", c.path, c.bearer, code, c.want)
		}
	}
	c := consoleClient(t)
	if code := consoleDo(t, c, "POST", r.URL+"/console/api/login", map[string]string{"token": "env:SHOAL_PREHEAT_TOKEN"}, nil); code != 401 {
		t.Fatalf("console login with the reference: %d", code)
	}
	for _, weak := range []string{"change-me", "x", "env:SHOAL_TEST_UNSET_TOKEN", "0123456789abcdef"} {
		for _, key := range []string{"apiTokens", "harbor.tokens"} {
			y := "apiTokens: [" + weak + "]\n"
			if key == "harbor.tokens" {
				y = "harbor: {tokens: [" + weak + "]}\n"
			}
			_, err := loadTestConfig(t, y)
			if err == nil || !strings.Contains(err.Error(), key+"[0]") {
				t.Errorf("%s %q: %v", key, weak, err)
			}
		}
	}
}

// Finding 3, second half: preheat started on a network address with no
// tokens. Now the configuration is refused, saying what to set.
func TestAttackOpenListenerRefused(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:8002", ":8002", "10.0.0.1:8002", "[::]:8002"} {
		_, err := loadTestConfig(t, "addr: \""+addr+"\"\n")
		if err == nil || !strings.Contains(err.Error(), "apiTokens") || !strings.Contains(err.Error(), "127.0.0.1") {
			t.Errorf("addr %s with no apiTokens: %v", addr, err)
		}
	}
	if _, err := loadTestConfig(t, "addr: \"0.0.0.0:8002\"\napiTokens: ["+secret.Generate()+"]\n"); err != nil {
		t.Fatalf("with a token: %v", err)
	}
}

// Finding 3: with no tokens, a foreign Host or Origin and a text/plain
// body created and cancelled jobs (DNS rebinding, cross-site POST). Now the
// open API answers like the console: all refused, and nothing is created.
func TestAttackCrossSiteOpenAPI(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/x:1", 1<<10, 1)
	r := startReplica(t, testConfig(reg.URL), NewMemoryStore())
	a := startAgent(t, "n1", "g")
	a.gate = make(chan struct{})
	t.Cleanup(func() { close(a.gate) })
	heartbeat(t, r.URL, a.ID, a.URL(), "g")
	job := `{"image":"` + reg.Host + `/lib/x:1"}`
	send := func(method, path, body string, hdr map[string]string) int {
		req, _ := http.NewRequest(method, r.URL+path, strings.NewReader(body))
		for k, v := range hdr {
			if k == "Host" {
				req.Host = v
			} else {
				req.Header.Set(k, v)
			}
		}
		code, _ := sendRaw(t, req)
		return code
	}
	jsonCT := map[string]string{"Content-Type": "application/json"}
	with := func(k, v string) map[string]string {
		return map[string]string{"Content-Type": "application/json", k: v}
	}
	for name, c := range map[string]struct {
		hdr  map[string]string
		want int
	}{
		"rebound host":      {with("Host", "attacker.example:8002"), 403},
		"foreign origin":    {with("Origin", "http://attacker.example"), 403},
		"null origin":       {with("Origin", "null"), 403},
		"cross-site fetch":  {with("Sec-Fetch-Site", "cross-site"), 403},
		"same-site fetch":   {with("Sec-Fetch-Site", "same-site"), 403},
		"text/plain body":   {map[string]string{"Content-Type": "text/plain"}, 415},
		"form body":         {map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, 415},
		"no content type":   {map[string]string{}, 415},
		"origin other port": {with("Origin", "http://127.0.0.1:1"), 403},
	} {
		for _, path := range []string{"/api/v1/jobs", "/api/v1/webhooks/distribution", "/api/v1/webhooks/harbor"} {
			if code := send("POST", path, job, c.hdr); code != c.want {
				t.Errorf("%s: POST %s = %d, want %d", name, path, code, c.want)
			}
		}
	}
	// Nothing was created; a same-origin JSON request from this host is.
	if got := len(mustList(t, r)); got != 0 {
		t.Fatalf("%d jobs created by refused requests", got)
	}
	if code := send("POST", "/api/v1/jobs", job, jsonCT); code != 201 {
		t.Fatalf("local JSON create: %d", code)
	}
	for name, hdr := range map[string]map[string]string{
		"rebound host": {"Host": "attacker.example:8002"}, "foreign origin": {"Origin": "http://attacker.example"},
		"cross-site": {"Sec-Fetch-Site": "cross-site"},
	} {
		if code := send("DELETE", "/api/v1/jobs/1", "", hdr); code != 403 {
			t.Errorf("%s: cancel = %d", name, code)
		}
		if code := send("GET", "/api/v1/jobs/1", "", hdr); name == "rebound host" && code != 403 {
			t.Errorf("%s: read = %d", name, code)
		}
	}
	if j := mustList(t, r); len(j) != 1 || j[0].State.Terminal() {
		t.Fatalf("jobs after refused cancels: %+v", j)
	}
	if code := send("DELETE", "/api/v1/jobs/1", "", map[string]string{"Origin": r.URL}); code != 200 {
		t.Fatalf("same-origin cancel: %d", code)
	}
}

func mustList(t *testing.T, r *replica) []*Job {
	t.Helper()
	js, err := r.svc.store.ListJobs(context.Background(), 100)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// Finding 4: webhook delivery ids sized by the sender were kept as keys
// (memory: never pruned). Now every id is stored as a fixed-size hash, and
// the memory store drops expired ones as it grows (webhook's
// TestMemoryBounded checks its size).
func TestAttackDedupeKeysBounded(t *testing.T) {
	ctx := context.Background()
	big := strings.Repeat("k", 1<<20)
	now := time.Unix(1_700_000_000, 0)
	m := NewMemoryStore()
	m.now = func() time.Time { return now }
	if first, _ := m.MarkSeen(ctx, now, big, time.Minute); !first {
		t.Fatal("a new id counted as seen")
	}
	if first, _ := m.MarkSeen(ctx, now, big, time.Minute); first {
		t.Fatal("a repeated id counted as new")
	}

	rs := testenv.StartRedis(t)
	st := redisStore(t, rs.Addr)
	if first, err := st.MarkSeen(ctx, time.Now(), big, time.Minute); err != nil || !first {
		t.Fatalf("redis mark: %v %v", first, err)
	}
	if first, _ := st.MarkSeen(ctx, time.Now(), big, time.Minute); first {
		t.Fatal("redis: a repeated id counted as new")
	}
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	keys, err := rdb.Keys(ctx, "*").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		if len(k) > 128 {
			t.Fatalf("redis key of %d bytes", len(k))
		}
	}
}

// Finding 6: with apiTokens set, listings needed no token. And the
// console's login had no rate limit.
func TestAttackListingsAndLoginGuarded(t *testing.T) {
	tok := secret.Generate()
	cfg := testConfig("http://127.0.0.1:1")
	cfg.APITokens = config.NewTokens(tok)
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "n1", "g")
	heartbeat(t, r.URL, a.ID, a.URL(), "g")
	for _, p := range []string{"/api/v1/jobs", "/api/v1/jobs/1", "/api/v1/nodes", "/api/v1/groups"} {
		var e map[string]any
		if code := call(t, "GET", r.URL+p, nil, nil, &e); code != 401 {
			t.Errorf("GET %s without a token: %d %v", p, code, e)
		}
	}
	var nodes struct{ Nodes []NodeView }
	if code := call(t, "GET", r.URL+"/api/v1/nodes", map[string]string{"Authorization": "Bearer " + tok}, nil, &nodes); code != 200 || len(nodes.Nodes) != 1 {
		t.Fatalf("with the token: %d %+v", code, nodes)
	}
	c := consoleClient(t)
	refused := 0
	for range 20 {
		switch code := consoleDo(t, c, "POST", r.URL+"/console/api/login", map[string]string{"token": secret.Generate()}, nil); code {
		case 401:
		case 429:
			refused++
		default:
			t.Fatalf("wrong token: %d", code)
		}
	}
	if refused < 20-console.LoginBurst {
		t.Fatalf("%d of 20 rapid guesses refused unseen", refused)
	}
	// Even the right token waits: a guesser cannot tell a hit from a miss
	// by the limiter.
	if code := consoleDo(t, c, "POST", r.URL+"/console/api/login", map[string]string{"token": tok}, nil); code != 429 {
		t.Fatalf("login while limited: %d", code)
	}
}

// Finding 8: a cancelled or lease-lost job kept its pull credentials in
// memory until restart. Now they go when the job's run ends, in every
// state, and the store never holds them.
func TestAttackCredentialsEndWithJob(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/sec:1", 2<<10, 2)
	const pull = "Bearer job-pull-secret-do-not-keep"
	st := NewMemoryStore()
	cfg := testConfig(reg.URL)
	r := startReplica(t, cfg, st)
	a := startAgent(t, "n1", "g")
	a.gate = make(chan struct{})
	a.started = make(chan string, 16)
	heartbeat(t, r.URL, a.ID, a.URL(), "g")
	create := func(tag, group string, ag *testAgent) int64 {
		t.Helper()
		reg.push(t, "lib/sec:"+tag, 2<<10, 1)
		var j JobView
		if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/sec:" + tag, Groups: []string{group},
			Headers: map[string]string{"Authorization": pull}}, &j); code != 201 {
			t.Fatalf("create: %d", code)
		}
		if ag.gate != nil {
			<-ag.started // running, credentials in use
			if !hasCreds(r, j.ID) {
				t.Fatal("a running job has no credentials")
			}
		}
		return j.ID
	}
	checkGone := func(what string, id int64) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for hasCreds(r, id) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if hasCreds(r, id) {
			t.Fatalf("%s: job %d's credentials still held", what, id)
		}
		j, err := st.GetJob(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := json.Marshal(j)
		ps, _ := st.ListProgress(context.Background(), id)
		pb, _ := json.Marshal(ps)
		if strings.Contains(string(b)+string(pb), "job-pull-secret") {
			t.Fatalf("%s: the store holds the credentials: %s %s", what, b, pb)
		}
	}

	// Cancelled.
	id := create("c", "g", a)
	if code := call(t, "DELETE", fmt.Sprintf("%s/api/v1/jobs/%d", r.URL, id), nil, nil, nil); code != 200 {
		t.Fatalf("cancel: %d", code)
	}
	checkGone("cancelled", id)

	// Lease lost: another replica took the job over.
	id = create("l", "g", a)
	if ok, err := st.AcquireLease(context.Background(), time.Now().Add(time.Hour), id, "another-replica", time.Hour); err != nil || !ok {
		t.Fatalf("another replica's lease: %v %v", ok, err)
	}
	checkGone("lease lost", id)
	if _, err := st.UpdateJob(context.Background(), time.Now(), id, time.Minute, func(j *Job) error { j.State = StateCanceled; return nil }); err != nil {
		t.Fatal(err)
	}

	// Failed: the agent refuses.
	b := startAgent(t, "n2", "g2")
	b.status, b.body = http.StatusBadGateway, `{"error":"no"}`
	heartbeat(t, r.URL, b.ID, b.URL(), "g2")
	id = create("f", "g2", b)
	waitJob(t, r.URL, id, StateFailure, 10*time.Second)
	checkGone("failed", id)
	close(a.gate)
}

func hasCreds(r *replica, id int64) bool {
	return r.svc.runner.HoldsCredentials(id)
}
