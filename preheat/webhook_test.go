package preheat

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/preheat/image"
	"github.com/shoalproject/shoal/preheat/webhook"
)

func webhookSetup(t *testing.T) (*replica, *testRegistry, string) {
	t.Helper()
	reg := startRegistry(t)
	img := reg.push(t, "library/web:1.2", 4<<10, 1)
	d, _ := img.Digest()
	cfg := testConfig(reg.URL)
	cfg.Policies = []Policy{
		{Name: "web", Repository: "library/*", TagRegex: `^\d+\.\d+$`, Groups: []string{"zone-a"}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "a1", "zone-a")
	heartbeat(t, r.URL, a.ID, a.URL(), "zone-a")
	return r, reg, d.String()
}

func postRaw(t *testing.T, u, ctype, body string) (int, WebhookResult) {
	t.Helper()
	resp, err := http.Post(u, ctype, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var res WebhookResult
	_ = json.NewDecoder(resp.Body).Decode(&res)
	return resp.StatusCode, res
}

func distEnvelope(id, host, repo, tag, digest string) string {
	return fmt.Sprintf(`{
   "events": [
      {
         "id": %q,
         "timestamp": "2026-03-09T14:44:26.402973972-08:00",
         "action": "push",
         "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": %q,
            "size": 708,
            "length": 708,
            "repository": %q,
            "url": "http://%s/v2/%s/manifests/%s",
            "tag": %q
         },
         "request": {"id": "r1", "addr": "127.0.0.1:4242", "host": %q, "method": "PUT", "useragent": "go-containerregistry"},
         "actor": {},
         "source": {"addr": "127.0.0.1:5000", "instanceID": "x"}
      },
      {
         "id": "blob-%s", "action": "push",
         "target": {"mediaType": "application/octet-stream", "digest": "sha256:00", "repository": %q}
      }
   ]
}`, id, digest, repo, host, repo, digest, tag, host, id, repo)
}

func TestDistributionWebhook(t *testing.T) {
	r, reg, digest := webhookSetup(t)
	for i, mt := range []string{webhook.EventsV1, webhook.EventsV2} {
		id := fmt.Sprintf("ev-%d", i)
		code, res := postRaw(t, r.URL+"/api/v1/webhooks/distribution", mt, distEnvelope(id, reg.Host, "library/web", "1.2", digest))
		if code != 200 || len(res.Jobs) != 1 || res.Ignored != 1 || len(res.Errors) != 0 {
			t.Fatalf("%s: %d %+v", mt, code, res)
		}
		v := waitJob(t, r.URL, res.Jobs[0], StateSuccess, 10*time.Second)
		if v.Digest != digest || len(v.Groups) != 1 || v.Groups[0] != "zone-a" || v.Source != "distribution" {
			t.Fatalf("job %+v", v.Job)
		}
		// Duplicate delivery of the same event: no second job.
		code, dup := postRaw(t, r.URL+"/api/v1/webhooks/distribution", mt, distEnvelope(id, reg.Host, "library/web", "1.2", digest))
		if code != 200 || len(dup.Jobs) != 0 {
			t.Fatalf("duplicate delivery started a job: %+v", dup)
		}
	}
	// Non-matching repository and tag → no job.
	for _, ev := range []string{
		distEnvelope("other-repo", reg.Host, "team/web", "1.2", digest),
		distEnvelope("other-tag", reg.Host, "library/web", "latest", digest),
		distEnvelope("by-digest", reg.Host, "library/web", "", digest),
	} {
		code, res := postRaw(t, r.URL+"/api/v1/webhooks/distribution", webhook.EventsV2, ev)
		if code != 200 || len(res.Jobs) != 0 || res.Ignored != 2 {
			t.Fatalf("non-matching push: %d %+v", code, res)
		}
	}
	code, _ := postRaw(t, r.URL+"/api/v1/webhooks/distribution", "text/plain", "{}")
	if code != http.StatusUnsupportedMediaType {
		t.Fatalf("wrong media type = %d", code)
	}
	var list struct{ Jobs []Job }
	call(t, "GET", r.URL+"/api/v1/jobs", nil, nil, &list)
	if len(list.Jobs) != 2 {
		t.Fatalf("jobs = %d, want 2", len(list.Jobs))
	}
}

func TestHarborWebhook(t *testing.T) {
	r, reg, digest := webhookSetup(t)
	def := fmt.Sprintf(`{"type":"PUSH_ARTIFACT","occur_at":1678082303,"operator":"admin","event_data":{"resources":[{"digest":%q,"tag":"1.2","resource_url":"%s/library/web:1.2"}],"repository":{"date_created":1677053165,"name":"web","namespace":"library","repo_full_name":"library/web","repo_type":"public"}}}`, digest, reg.Host)
	code, res := postRaw(t, r.URL+"/api/v1/webhooks/harbor", "application/json", def)
	if code != 200 || len(res.Jobs) != 1 {
		t.Fatalf("harbor default: %d %+v", code, res)
	}
	first := res.Jobs[0]
	// Harbor retries (MaxFails 3): same payload → no new job, even after
	// the first finished.
	waitJob(t, r.URL, first, StateSuccess, 10*time.Second)
	if _, dup := postRaw(t, r.URL+"/api/v1/webhooks/harbor", "application/json", def); len(dup.Jobs) != 0 {
		t.Fatalf("duplicate harbor delivery: %+v", dup)
	}

	ce := fmt.Sprintf(`{"specversion":"1.0","requestid":"rq-1","id":"3b1a2f2e-0000-4000-8000-000000000001","source":"/projects/1/webhook/policies/1","type":"harbor.artifact.pushed","datacontenttype":"application/json","time":"2026-11-23T10:00:00Z","data":{"resources":[{"digest":%q,"tag":"1.2","resource_url":"%s/library/web:1.2"}],"repository":{"name":"web","namespace":"library","repo_full_name":"library/web","repo_type":"public"}},"operator":"admin"}`, digest, reg.Host)
	code, res = postRaw(t, r.URL+"/api/v1/webhooks/harbor", "application/cloudevents+json", ce)
	if code != 200 || len(res.Jobs) != 1 || res.Jobs[0] == first {
		t.Fatalf("harbor cloudevents: %d %+v", code, res)
	}
	waitJob(t, r.URL, res.Jobs[0], StateSuccess, 10*time.Second)

	nomatch := strings.ReplaceAll(def, "library/web", "team/web")
	if _, res := postRaw(t, r.URL+"/api/v1/webhooks/harbor", "application/json", nomatch); len(res.Jobs) != 0 || res.Ignored != 1 {
		t.Fatalf("non-matching harbor push: %+v", res)
	}
	other := strings.Replace(def, "PUSH_ARTIFACT", "DELETE_ARTIFACT", 1)
	if _, res := postRaw(t, r.URL+"/api/v1/webhooks/harbor", "application/json", other); len(res.Jobs) != 0 {
		t.Fatalf("delete event started a job: %+v", res)
	}
}

// Bad input: clear JSON error, and no job left behind.
func TestBadInput(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/ok:1", 1<<10, 1)
	cfg := testConfig(reg.URL)
	cfg.Registries = []string{"127.0.0.1:1"} // configured, nothing listens
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "a1", "zone-a")
	heartbeat(t, r.URL, a.ID, a.URL(), "zone-a")

	huge := `{"image":"` + strings.Repeat("x", 128<<10) + `"}`
	cases := []struct {
		name string
		body any
		want int
		msg  string
	}{
		{"unknown image", JobRequest{Image: reg.Host + "/lib/nope:1"}, 404, "not found"},
		{"unknown tag", JobRequest{Image: reg.Host + "/lib/ok:2"}, 404, "not found"},
		{"unreachable registry", JobRequest{Image: "127.0.0.1:1/lib/ok:1"}, 502, "unreachable"},
		{"malformed JSON", `{"image": `, 400, "malformed JSON"},
		{"not an object", `[1,2]`, 400, "malformed JSON"},
		{"oversized body", huge, 413, "larger than"},
		{"unknown group", JobRequest{Image: reg.Host + "/lib/ok:1", Groups: []string{"zone-z"}}, 400, "unknown group"},
		{"no image", JobRequest{}, 400, "required"},
		{"bad platform", JobRequest{Image: reg.Host + "/lib/ok:1", Platforms: []string{"amd64"}}, 400, "platform"},
		{"bad manifest url", JobRequest{URL: "http://" + reg.Host + "/nope"}, 400, "manifest url"},
	}
	for _, c := range cases {
		var e map[string]string
		code := call(t, "POST", r.URL+"/api/v1/jobs", nil, c.body, &e)
		if code != c.want || !strings.Contains(e["error"], c.msg) || e["code"] != httpx.CodeFor(c.want) {
			t.Errorf("%s: %d %v, want %d with %q", c.name, code, e, c.want, c.msg)
		}
	}
	for u, want := range map[string]string{"/api/v1/jobs/abc": "INVALID", "/api/v1/jobs/77": "NOT_FOUND", "/api/v1/nope": "NOT_FOUND"} {
		var e map[string]string
		if code := call(t, "GET", r.URL+u, nil, nil, &e); code < 400 || e["error"] == "" || e["code"] != want {
			t.Errorf("GET %s: %d %v, want code %s", u, code, e, want)
		}
	}
	var e map[string]string
	if code := call(t, "PUT", r.URL+"/api/v1/jobs", nil, "{}", &e); code != 405 || e["error"] == "" || e["code"] != "METHOD_NOT_ALLOWED" {
		t.Errorf("PUT jobs: %d %v", code, e)
	}
	if code, msg := heartbeatAs(t, r.URL, testIdentity("x"), nodeapi.Heartbeat{ID: "x"}, time.Now()); code != 400 || !strings.Contains(msg, "https://host:port") {
		t.Errorf("heartbeat without address: %d %s", code, msg)
	}
	if code, msg := heartbeatAs(t, r.URL, testIdentity("x"), nodeapi.Heartbeat{ID: "x", Address: "http://127.0.0.1:1"}, time.Now()); code != 400 {
		t.Errorf("heartbeat with a plain http address: %d %s", code, msg)
	}
	var list struct{ Jobs []Job }
	call(t, "GET", r.URL+"/api/v1/jobs", nil, nil, &list)
	if len(list.Jobs) != 0 {
		t.Fatalf("rejected requests left %d jobs", len(list.Jobs))
	}
}

// Registry with the token dance: 401 + Bearer challenge → token service
// (basic auth) → manifest; the earned token is what agents use.
func TestRegistryTokenAuth(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "priv/app:1", 2<<10, 1)
	const tok = "tok-123"
	var authURL string
	tokenSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != "alice" || p != "s3cret" || r.URL.Query().Get("scope") != "repository:priv/app:pull" {
			w.WriteHeader(401)
			return
		}
		httpx.WriteJSON(w, 200, map[string]string{"token": tok})
	}))
	t.Cleanup(tokenSrv.Close)
	authURL = tokenSrv.URL
	bu, _ := url.Parse(reg.URL)
	proxy := httputil.NewSingleHostReverseProxy(bu)
	guarded := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer "+tok {
			w.Header().Set("WWW-Authenticate", fmt.Sprintf(`Bearer realm="%s/token",service="test-registry",scope="repository:priv/app:pull"`, authURL))
			httpx.WriteError(w, 401, "", "unauthorized")
			return
		}
		proxy.ServeHTTP(w, r)
	}))
	t.Cleanup(guarded.Close)
	host := strings.TrimPrefix(guarded.URL, "http://")

	cfg := testConfig(reg.URL)
	cfg.Registries = []string{host}
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "a1", "g")
	heartbeat(t, r.URL, a.ID, a.URL(), "g")

	var e map[string]string
	if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: host + "/priv/app:1", Username: "alice", Password: "wrong"}, &e); code != 401 {
		t.Fatalf("bad password: %d %v", code, e)
	}
	var j JobView
	if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: host + "/priv/app:1", Username: "alice", Password: "s3cret"}, &j); code != 201 {
		t.Fatalf("create: %d", code)
	}
	v := waitJob(t, r.URL, j.ID, StateSuccess, 10*time.Second)
	if !v.NeedsCreds {
		t.Fatal("job not marked as needing credentials")
	}
	if h := a.headers[0].Get("Authorization"); h != "Bearer "+tok {
		t.Fatalf("agent used %q", h)
	}
	// Credentials never reach the store.
	raw, _ := json.Marshal(v)
	for _, secret := range []string{"s3cret", tok, base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))} {
		if strings.Contains(string(raw), secret) {
			t.Fatalf("job record contains a secret: %s", raw)
		}
	}
}

// An index resolves to the manifests of the requested platforms only.
func TestResolveIndexPlatforms(t *testing.T) {
	reg := startRegistry(t)
	amd, _ := random.Image(1024, 1)
	arm, _ := random.Image(1024, 2)
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64", Variant: "v8"}}},
	)
	ref, _ := name.ParseReference(reg.Host+"/multi/app:1", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}
	res := image.NewResolver(http.DefaultClient, logrus.NewEntry(logrus.New()))
	ir := ImageRef{Registry: reg.URL, Repository: "multi/app", Reference: "1"}
	for _, c := range []struct {
		platforms []string
		want      [][]string
	}{
		{nil, [][]string{blobDigests(t, amd), blobDigests(t, arm)}},
		{[]string{"linux/arm64"}, [][]string{blobDigests(t, arm)}},
		{[]string{"linux/arm64/v8"}, [][]string{blobDigests(t, arm)}},
		{[]string{"linux/amd64"}, [][]string{blobDigests(t, amd)}},
	} {
		got, err := res.Resolve(bg, ir, c.platforms, Credentials{})
		if err != nil {
			t.Fatal(err)
		}
		var want []string
		for _, w := range c.want {
			want = append(want, w...)
		}
		var have []string
		for _, b := range got.Blobs {
			have = append(have, b.Digest)
		}
		if strings.Join(have, ",") != strings.Join(want, ",") {
			t.Fatalf("platforms %v: blobs %v, want %v", c.platforms, have, want)
		}
		if d, _ := idx.Digest(); got.Digest != d.String() {
			t.Fatalf("digest %s, want index digest %s", got.Digest, d)
		}
	}
	_, err := res.Resolve(bg, ir, []string{"windows/amd64"}, Credentials{})
	var re *ResolveError
	if !errors.As(err, &re) || re.Status != 400 {
		t.Fatalf("no matching platform: %v", err)
	}
}

// apiTokens guard job writes, webhooks (Bearer, or the bare token Harbor
// sends as auth_header) and reads; agent heartbeats stay open.
func TestAPITokens(t *testing.T) {
	apiSecret := secret.Generate()
	reg := startRegistry(t)
	reg.push(t, "lib/tok:1", 1<<10, 1)
	cfg := testConfig(reg.URL)
	cfg.APITokens = config.NewTokens(apiSecret)
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "a1", "g")
	heartbeat(t, r.URL, a.ID, a.URL(), "g") // open, per the agent contract
	req := JobRequest{Image: reg.Host + "/lib/tok:1"}
	var e map[string]string
	if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, req, &e); code != 401 || e["error"] == "" {
		t.Fatalf("no token: %d %v", code, e)
	}
	if code := call(t, "POST", r.URL+"/api/v1/webhooks/harbor", map[string]string{"Authorization": "Bearer nope"}, "{}", &e); code != 401 {
		t.Fatalf("bad token on webhook: %d", code)
	}
	var j JobView
	if code := call(t, "POST", r.URL+"/api/v1/jobs", map[string]string{"Authorization": "Bearer " + apiSecret}, req, &j); code != 201 {
		t.Fatalf("with token: %d", code)
	}
	if code := call(t, "POST", r.URL+"/api/v1/webhooks/harbor", map[string]string{"Authorization": apiSecret}, `{"type":"PUSH_ARTIFACT"}`, &map[string]any{}); code != 200 {
		t.Fatalf("bare auth_header token on webhook: %d", code)
	}
	if code := call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", r.URL, j.ID), nil, nil, &map[string]any{}); code != 401 {
		t.Fatalf("read without token: %d", code)
	}
	if code := call(t, "GET", fmt.Sprintf("%s/api/v1/jobs/%d", r.URL, j.ID), map[string]string{"Authorization": "Bearer " + apiSecret}, nil, &JobView{}); code != 200 {
		t.Fatalf("read with token: %d", code)
	}
}
