package preheat

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/preheat/internal/mediatype"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// honeypot is an attacker's listener: it counts every connection, so a
// test can show that preheat never contacted it (and so never sent it a
// job's credentials).
type honeypot struct {
	srv   *httptest.Server
	conns atomic.Int64
}

func startHoneypot(t *testing.T) *honeypot {
	t.Helper()
	h := &honeypot{}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		httpx.WriteJSON(w, 200, nodeapi.FetchResponse{Digest: "sha256:x", Source: "cache"})
	}))
	h.srv.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			h.conns.Add(1)
		}
	}
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	return h
}

func (h *honeypot) addr() string { return h.srv.URL }

// A credentialed job on the real node's group: returns the finished view.
func credentialedJob(t *testing.T, r *replica, reg *testRegistry, group, apiToken string) *JobView {
	t.Helper()
	var hdr map[string]string
	if apiToken != "" {
		hdr = map[string]string{"Authorization": "Bearer " + apiToken}
	}
	var j JobView
	if code := call(t, "POST", r.URL+"/api/v1/jobs", hdr, JobRequest{Image: reg.Host + "/lib/sec:1", Groups: []string{group},
		Headers: map[string]string{"Authorization": "Bearer job-pull-secret"}}, &j); code != 201 {
		t.Fatalf("create job: %d", code)
	}
	return waitJob(t, r.URL, j.ID, StateSuccess, 15*time.Second)
}

// Fake heartbeats — unsigned, from another cluster, for another node's id,
// tampered, stale, replayed — are refused 401 in the JSON error shape; none
// of them registers an address, and a job with credentials reaches only the
// genuine node.
func TestFakeHeartbeatsRefused(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/sec:1", 2<<10, 2)
	r := startReplica(t, testConfig(reg.URL), NewMemoryStore())
	real := startAgent(t, "n1", "g")
	heartbeat(t, r.URL, real.ID, real.URL(), "g")
	evil := startHoneypot(t)

	otherCluster, _ := cluster.NewAuthority(secret.Generate())
	foreign, _ := otherCluster.Issue("n1", nil)
	hb := nodeapi.Heartbeat{ID: "n1", Address: evil.addr(), Groups: []string{"g"}}
	post := func(h http.Header, body []byte) (int, string) {
		req, _ := http.NewRequest(http.MethodPost, r.URL+nodeapi.HeartbeatPath, bytes.NewReader(body))
		for k, v := range h {
			req.Header[k] = v
		}
		return sendRaw(t, req)
	}
	body, _ := json.Marshal(hb)
	signed := func(id *cluster.Identity, b []byte, at time.Time) http.Header {
		h := http.Header{}
		nodeapi.Sign(h, id, http.MethodPost, nodeapi.HeartbeatPath, b, at)
		return h
	}
	other := testIdentity("n2") // a genuine member, but not n1
	otherBody, _ := json.Marshal(nodeapi.Heartbeat{ID: "n1", Address: evil.addr(), Groups: []string{"g"}})
	tampered := signed(testIdentity("n1"), []byte(`{"id":"n1","address":"https://127.0.0.1:9","groups":["g"]}`), time.Now())
	cases := []struct {
		name string
		h    http.Header
		body []byte
	}{
		{"unsigned", http.Header{}, body},
		{"certificate of another cluster", signed(foreign, body, time.Now()), body},
		{"another member's certificate", signed(other, otherBody, time.Now()), otherBody},
		{"body changed after signing", tampered, body},
		{"stale", signed(testIdentity("n1"), body, time.Now().Add(-5*time.Minute)), body},
		{"from the future", signed(testIdentity("n1"), body, time.Now().Add(5*time.Minute)), body},
	}
	for _, c := range cases {
		if code, msg := post(c.h, c.body); code != http.StatusUnauthorized || msg == "" {
			t.Errorf("%s: %d %q, want 401", c.name, code, msg)
		}
	}
	// Replay: a genuine heartbeat captured on the wire, sent again.
	genuine, _ := json.Marshal(nodeapi.Heartbeat{ID: "n1", Address: real.URL(), Groups: []string{"g"}})
	captured := signed(testIdentity("n1"), genuine, time.Now())
	if code, msg := post(captured, genuine); code != http.StatusNoContent {
		t.Fatalf("genuine heartbeat: %d %s", code, msg)
	}
	if code, msg := post(captured, genuine); code != http.StatusUnauthorized || !strings.Contains(msg, "replayed") {
		t.Errorf("replayed heartbeat: %d %q", code, msg)
	}

	var nodes struct{ Nodes []NodeView }
	call(t, "GET", r.URL+"/api/v1/nodes", nil, nil, &nodes)
	if len(nodes.Nodes) != 1 || nodes.Nodes[0].Address != real.URL() || nodes.Nodes[0].KeyFingerprint != nodeapi.Fingerprint(testIdentity("n1").Public()) {
		t.Fatalf("nodes after the attempts: %+v", nodes.Nodes)
	}
	v := credentialedJob(t, r, reg, "g", "")
	if n := evil.conns.Load(); n != 0 {
		t.Fatalf("the attacker's address got %d connections", n)
	}
	if n := real.fetches.Load(); n != int64(len(v.Blobs)) {
		t.Fatalf("the real node got %d fetches, want %d", n, len(v.Blobs))
	}
}

// An attacker who is a cluster member (holds the join secret) claims an
// enrolled node's id with its own key: refused 409, the node keeps its
// address and receives the jobs, the attacker nothing. Only an operator
// with an API token can forget the node, after which its id enrolls again
// (a re-imaged node with a new key).
func TestRepointedNodeRefused(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/sec:1", 2<<10, 2)
	cfg := testConfig(reg.URL)
	cfg.APITokens = config.NewTokens("operator-token-0123456789abcdef0123")
	r := startReplica(t, cfg, NewMemoryStore())
	real := startAgent(t, "n1", "g")
	heartbeat(t, r.URL, real.ID, real.URL(), "g")

	attacker, _ := testAuthority.Issue("n1", nil) // a valid certificate for n1, another key
	evil := startAgentAs(t, "n1", "g", attacker)
	code, msg := heartbeatAs(t, r.URL, attacker, nodeapi.Heartbeat{ID: "n1", Address: evil.URL(), Groups: []string{"g"}}, time.Now())
	if code != http.StatusConflict || !strings.Contains(msg, "another key") {
		t.Fatalf("re-pointing heartbeat: %d %q", code, msg)
	}
	// The real node keeps heartbeating and keeps its place.
	heartbeat(t, r.URL, real.ID, real.URL(), "g")
	v := credentialedJob(t, r, reg, "g", cfg.APITokens[0].Value())
	if evil.fetches.Load() != 0 || real.fetches.Load() != int64(len(v.Blobs)) {
		t.Fatalf("fetches: attacker %d, real %d", evil.fetches.Load(), real.fetches.Load())
	}

	var nodes struct{ Nodes []NodeView }
	call(t, "GET", r.URL+"/api/v1/nodes", readAuth(r.URL), nil, &nodes)
	if len(nodes.Nodes) != 1 || nodes.Nodes[0].Address != real.URL() {
		t.Fatalf("nodes: %+v", nodes.Nodes)
	}

	// Even at the enrolled address (the attacker took over the node's
	// port), a server with another key gets nothing: the TLS pin refuses
	// it before the request, and its credentials, are sent.
	addr := real.srv.Listener.Addr().String()
	real.srv.Close()
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("cannot take over the node's port: %v", err)
	}
	var got atomic.Int64
	squat := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { got.Add(1) }))
	squat.Listener.Close()
	squat.Listener = l
	squat.TLS = testAuthority.ServerTLS(attacker)
	squat.StartTLS()
	defer squat.Close()
	reg.push(t, "lib/sec:2", 2<<10, 1)
	var j JobView
	call(t, "POST", r.URL+"/api/v1/jobs", map[string]string{"Authorization": "Bearer " + cfg.APITokens[0].Value()},
		JobRequest{Image: reg.Host + "/lib/sec:2", Groups: []string{"g"}, Headers: map[string]string{"Authorization": "Bearer job-pull-secret"}}, &j)
	fv := waitJob(t, r.URL, j.ID, StateFailure, 15*time.Second)
	if got.Load() != 0 || !strings.Contains(fv.Error, "another key") {
		t.Fatalf("squatter at the enrolled address: %d requests, job error %q", got.Load(), fv.Error)
	}

	// Forgetting needs the operator's token.
	del := func(token string) int {
		req, _ := http.NewRequest(http.MethodDelete, r.URL+"/api/v1/nodes/n1", nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		code, _ := sendRaw(t, req)
		return code
	}
	if c := del(""); c != http.StatusUnauthorized {
		t.Fatalf("forget without a token: %d", c)
	}
	if c := del("guess"); c != http.StatusUnauthorized {
		t.Fatalf("forget with a wrong token: %d", c)
	}
	if c := del(cfg.APITokens[0].Value()); c != http.StatusNoContent {
		t.Fatalf("forget: %d", c)
	}
	if c := del(cfg.APITokens[0].Value()); c != http.StatusNotFound {
		t.Fatalf("forget again: %d", c)
	}
	reimaged, _ := testAuthority.Issue("n1", nil)
	if code, msg := heartbeatAs(t, r.URL, reimaged, nodeapi.Heartbeat{ID: "n1", Address: real.URL(), Groups: []string{"g"}}, time.Now()); code != http.StatusNoContent {
		t.Fatalf("re-enrollment after forget: %d %q", code, msg)
	}
}

// Without API tokens configured nobody can forget a node.
func TestForgetNodeNeedsConfiguredToken(t *testing.T) {
	r := startReplica(t, testConfig("http://127.0.0.1:5000"), NewMemoryStore())
	req, _ := http.NewRequest(http.MethodDelete, r.URL+"/api/v1/nodes/n1", nil)
	if code, msg := sendRaw(t, req); code != http.StatusForbidden || !strings.Contains(msg, "apiTokens") {
		t.Fatalf("forget with no tokens configured: %d %q", code, msg)
	}
}

// What an agent or a registry answers never reaches job progress, job
// errors or API answers: only a status and a fixed message per class.
func TestUpstreamBodiesNeverReflected(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/sec:1", 2<<10, 1)
	const marker = "INTERNAL-ONLY-7f3a"
	r := startReplica(t, testConfig(reg.URL), NewMemoryStore())
	for i, c := range []struct {
		status int
		body   string
		want   string
	}{
		{403, `{"error":"` + marker + `","code":"UPSTREAM_DENIED"}`, "registry refused the job's credentials (403)"},
		{502, `{"error":"` + marker + `"}`, "agent failed (502)"},
		{500, marker, "agent failed (500)"},
		{418, `{"error":"x","code":"` + marker + `"}`, "agent answered 418"},
	} {
		id := fmt.Sprintf("r%d", i)
		a := startAgent(t, id, id)
		a.status, a.body = c.status, c.body
		heartbeat(t, r.URL, a.ID, a.URL(), id)
		var j JobView
		call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/sec:1", Groups: []string{id}}, &j)
		v := waitJob(t, r.URL, j.ID, StateFailure, 10*time.Second)
		raw, _ := json.Marshal(v)
		if strings.Contains(string(raw), marker) {
			t.Fatalf("agent answer %d leaked into the job: %s", c.status, raw)
		}
		if len(v.Progress) != 2 || v.Progress[0].Error != c.want {
			t.Fatalf("answer %d: progress %+v, want error %q", c.status, v.Progress, c.want)
		}
	}
	// A registry's error body during resolution.
	bad := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(500)
		_, _ = w.Write([]byte(marker))
	}))
	defer bad.Close()
	cfg := testConfig(reg.URL)
	cfg.Registries = []string{bad.URL}
	r2 := startReplica(t, cfg, NewMemoryStore())
	heartbeat(t, r2.URL, "r0", "https://127.0.0.1:1", "r0")
	var e map[string]string
	code := call(t, "POST", r2.URL+"/api/v1/jobs", nil, JobRequest{Image: strings.TrimPrefix(bad.URL, "http://") + "/lib/x:1"}, &e)
	if code != http.StatusBadGateway || strings.Contains(e["error"], marker) || !strings.Contains(e["error"], "500") {
		t.Fatalf("registry error: %d %v", code, e)
	}
}

// An image on a registry preheat is not configured for is refused with 400
// before any connection, whether named by reference, manifest URL or a
// webhook event.
func TestUnconfiguredRegistryRefused(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var conns atomic.Int64
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			c.Close()
		}
	}()
	other := l.Addr().String()
	cfg := testConfig("http://127.0.0.1:5000")
	cfg.Policies = []Policy{{Name: "all", Repository: "*/*"}}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, cfg, NewMemoryStore())
	for _, img := range []string{other + "/lib/x:1", "http://" + other + "/v2/lib/x/manifests/1", "https://" + other + "/v2/lib/x/manifests/1"} {
		var e map[string]string
		if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: img}, &e); code != 400 || !strings.Contains(e["error"], "not configured") {
			t.Errorf("%s: %d %v", img, code, e)
		}
	}
	code, res := postRaw(t, r.URL+"/api/v1/webhooks/distribution", webhook.EventsV2, distEnvelope("e1", other, "lib/x", "1.0", "sha256:"+strings.Repeat("a", 64)))
	if code != 200 || len(res.Jobs) != 0 || len(res.Errors) != 1 || !strings.Contains(res.Errors[0], "not configured") {
		t.Errorf("webhook: %d %+v", code, res)
	}
	if n := conns.Load(); n != 0 {
		t.Fatalf("the unconfigured registry got %d connections", n)
	}
}

// One webhook request cannot fan out without bound: too many events, or
// more matching pushes than jobs allowed per request, are refused whole.
func TestWebhookFanOutLimits(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:5000")
	cfg.Policies = []Policy{{Name: "all", Repository: "*/*"}}
	cfg.MaxWebhookEvents, cfg.MaxWebhookJobs = 10, 3
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, cfg, NewMemoryStore())
	envelope := func(n int) string {
		var evs []string
		for i := range n {
			evs = append(evs, fmt.Sprintf(`{"id":"e%d","action":"push","target":{"mediaType":%q,"digest":"sha256:%064d","repository":"lib/x","url":"http://127.0.0.1:1/v2/lib/x/manifests/%d","tag":"t%d"}}`,
				i, mediatype.OCIManifest, i, i, i))
		}
		return `{"events":[` + strings.Join(evs, ",") + `]}`
	}
	for _, c := range []struct {
		n    int
		want int
		msg  string
	}{{11, 413, "maxWebhookEvents"}, {4, 422, "maxWebhookJobs"}} {
		req, _ := http.NewRequest(http.MethodPost, r.URL+"/api/v1/webhooks/distribution", strings.NewReader(envelope(c.n)))
		req.Header.Set("Content-Type", webhook.EventsV2)
		if code, msg := sendRaw(t, req); code != c.want || !strings.Contains(msg, c.msg) {
			t.Errorf("%d events: %d %q, want %d", c.n, code, msg, c.want)
		}
	}
	var list struct{ Jobs []Job }
	call(t, "GET", r.URL+"/api/v1/jobs", nil, nil, &list)
	if len(list.Jobs) != 0 {
		t.Fatalf("refused requests started %d jobs", len(list.Jobs))
	}
	// Harbor's webhook: resources count as events.
	var res []string
	for i := range 11 {
		res = append(res, fmt.Sprintf(`{"digest":"sha256:%064d","tag":"t%d","resource_url":"127.0.0.1:5000/lib/x:t%d"}`, i, i, i))
	}
	body := `{"type":"PUSH_ARTIFACT","event_data":{"resources":[` + strings.Join(res, ",") + `],"repository":{"repo_full_name":"lib/x"}}}`
	req, _ := http.NewRequest(http.MethodPost, r.URL+"/api/v1/webhooks/harbor", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	if code, msg := sendRaw(t, req); code != 413 || !strings.Contains(msg, "resources") {
		t.Errorf("harbor: %d %q", code, msg)
	}
}

// A placeholder join secret stops the start with a message naming what to
// set (the removed agentToken is refused by LoadConfig: TestLoadConfig).
func TestConfigRefusesPlaceholderSecret(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:5000")
	cfg.Cluster.Secret = config.NewSecret("change-me-cluster-secret-0123456789abcdef")
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "cluster.secret") {
		t.Fatalf("placeholder secret: %v", err)
	}
}

// The registries a job may name, and the base URL each is reached at.
func TestRegistrySet(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:5000")
	cfg.Registries = []string{"https://Harbor.example.com/", "registry.internal:5000", "plain.internal:5000", "127.0.0.1:6000"}
	cfg.PlainHTTPRegistries = []string{"plain.internal:5000"}
	got, err := cfg.registrySet()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"127.0.0.1:5000":         "http://127.0.0.1:5000",
		"harbor.example.com":     "https://Harbor.example.com",
		"registry.internal:5000": "https://registry.internal:5000",
		"plain.internal:5000":    "http://plain.internal:5000",
		"127.0.0.1:6000":         "http://127.0.0.1:6000",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("registrySet = %v, want %v", got, want)
	}
	for _, bad := range []string{"ftp://x", "https://x/path", "https://u:p@x"} {
		cfg.Registries = []string{bad}
		if _, err := cfg.registrySet(); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}
