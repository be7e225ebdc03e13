package preheat

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/preheat/harbor"
)

func harborSetup(t *testing.T) (*replica, *testRegistry, []string, map[string]*testAgent) {
	t.Helper()
	reg := startRegistry(t)
	img := reg.push(t, "library/busybox:latest", 8<<10, 2)
	cfg := testConfig(reg.URL)
	cfg.Harbor.Tokens = config.NewTokens("harbor-pat-0123456789abcdef0123456789")
	cfg.Harbor.Clusters = map[int][]string{1: {"zone-a"}, 2: {"zone-b"}}
	cfg.Harbor.DefaultGroups = []string{"zone-a"}
	r := startReplica(t, cfg, NewMemoryStore())
	agents := map[string]*testAgent{}
	for _, a := range []*testAgent{startAgent(t, "a1", "zone-a"), startAgent(t, "b1", "zone-b")} {
		heartbeat(t, r.URL, a.ID, a.URL(), a.Group)
		agents[a.ID] = a
	}
	return r, reg, blobDigests(t, img), agents
}

var harborAuth = map[string]string{"Authorization": "Bearer harbor-pat-0123456789abcdef0123456789", "Accept": "application/json"}

// Replays the exact request Harbor ≥ 2.13's Dragonfly driver sends and
// checks what its driver parses: 2xx + integer id on create; state
// PENDING|SUCCESS|FAILURE and result.job_states[].results[] on poll.
func TestHarborDragonflyContract(t *testing.T) {
	r, reg, blobs, agents := harborSetup(t)

	for _, h := range []map[string]string{nil, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic aGFyYm9yOnB3"}} {
		if code := call(t, "GET", r.URL+"/healthy", h, nil, &map[string]any{}); code != 401 {
			t.Fatalf("health with %v = %d, want 401", h, code)
		}
		if code := call(t, "POST", r.URL+"/oapi/v1/jobs", h, `{}`, &map[string]any{}); code != 401 {
			t.Fatalf("create with %v = %d, want 401", h, code)
		}
	}
	var ok string
	if code := call(t, "GET", r.URL+"/healthy", harborAuth, nil, &ok); code != 200 || ok != "OK" {
		t.Fatalf("healthy = %d %q", code, ok)
	}

	body := fmt.Sprintf(`{"type":"preheat","args":{"type":"image","url":"%s/v2/library/busybox/manifests/latest","tag":"","filtered_query_params":"","headers":{"Authorization":"Bearer eyJhbGciOiJSUzI1NiJ9.harbor-pull"},"scope":"all_peers","concurrent_count":0,"timeout":0},"scheduler_cluster_ids":[2]}`, reg.URL)
	var raw map[string]any
	if code := call(t, "POST", r.URL+"/oapi/v1/jobs", harborAuth, body, &raw); code != 200 {
		t.Fatalf("create = %d %v", code, raw)
	}
	id, isNum := raw["id"].(float64)
	if !isNum || id != float64(int64(id)) || raw["state"] != "PENDING" {
		t.Fatalf("create response %v: want integer id and state PENDING", raw)
	}
	for _, k := range []string{"created_at", "updated_at"} {
		if _, err := time.Parse(time.RFC3339, raw[k].(string)); err != nil {
			t.Fatalf("%s not RFC3339: %v", k, raw[k])
		}
	}

	var job harbor.Job
	deadline := time.Now().Add(10 * time.Second)
	for {
		job = harbor.Job{}
		if code := call(t, "GET", fmt.Sprintf("%s/oapi/v1/jobs/%d", r.URL, int64(id)), harborAuth, nil, &job); code != 200 {
			t.Fatalf("poll = %d", code)
		}
		if job.State != "PENDING" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if job.State != "SUCCESS" || len(job.Result.JobStates) != 1 || job.Result.JobStates[0].Error != "" {
		t.Fatalf("final job %+v", job)
	}
	res := job.Result.JobStates[0].Results
	if len(res) != 1 || res[0].SchedulerClusterID != 2 || len(res[0].SuccessTasks) != len(blobs) || len(res[0].FailureTasks) != 0 {
		t.Fatalf("results %+v", res)
	}
	if tk := res[0].SuccessTasks[0]; tk.Hostname != "b1" || tk.IP != "127.0.0.1" || !strings.Contains(tk.URL, "/v2/library/busybox/blobs/sha256:") {
		t.Fatalf("task %+v", tk)
	}
	// Cluster 2 = zone-b only; the pull JWT Harbor passed reached the agent.
	if agents["a1"].fetches.Load() != 0 || len(agents["b1"].cached(t)) != len(blobs) {
		t.Fatal("cluster id did not map onto zone-b")
	}
	if h := agents["b1"].headers[0].Get("Authorization"); h != "Bearer eyJhbGciOiJSUzI1NiJ9.harbor-pull" {
		t.Fatalf("agent registry Authorization = %q", h)
	}

	// Harbor's mock semantics: unknown id → non-2xx; bad scope / cluster → 422.
	if code := call(t, "GET", r.URL+"/oapi/v1/jobs/999", harborAuth, nil, &map[string]any{}); code != 404 {
		t.Fatalf("unknown job = %d", code)
	}
	for _, b := range []string{
		strings.Replace(body, `"all_peers"`, `"some_peers"`, 1),
		strings.Replace(body, `[2]`, `[7]`, 1),
		`{"type":"preheat","args":{"type":"file","url":"http://x/y"}}`,
		`{"type":"preheat","args":`,
	} {
		var e map[string]string
		if code := call(t, "POST", r.URL+"/oapi/v1/jobs", harborAuth, b, &e); code != 422 || e["errors"] == "" || e["error"] != e["errors"] || e["code"] != "INVALID" {
			t.Fatalf("bad body %s → %d %v, want 422 with errors, error and code", b, code, e)
		}
	}
	// null cluster ids → default groups; single_seed_peer → one node per group.
	nullBody := strings.Replace(strings.Replace(body, `[2]`, `null`, 1), `all_peers`, `single_seed_peer`, 1)
	var j2 harbor.Job
	if code := call(t, "POST", r.URL+"/oapi/v1/jobs", harborAuth, nullBody, &j2); code != 200 {
		t.Fatalf("null clusters = %d", code)
	}
	deadline = time.Now().Add(10 * time.Second)
	for j2.State != "SUCCESS" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		call(t, "GET", fmt.Sprintf("%s/oapi/v1/jobs/%d", r.URL, j2.ID), harborAuth, nil, &j2)
	}
	if j2.State != "SUCCESS" || j2.Result.JobStates[0].Results[0].SchedulerClusterID != 1 || j2.Result.JobStates[0].Results[0].SuccessTasks[0].Hostname != "a1" {
		t.Fatalf("default groups job %+v", j2)
	}
}

func TestHarborLegacyDragonflyAndKraken(t *testing.T) {
	r, reg, blobs, agents := harborSetup(t)

	// Legacy Dragonfly (Harbor 2.1–2.11).
	if code := call(t, "GET", r.URL+"/_ping", nil, nil, &map[string]any{}); code != 401 {
		t.Fatalf("_ping without token = %d", code)
	}
	if code := call(t, "GET", r.URL+"/_ping", harborAuth, nil, new(string)); code != 200 {
		t.Fatalf("_ping = %d", code)
	}
	legacy := fmt.Sprintf(`{"type":"image","url":"%s/v2/library/busybox/manifests/latest","headers":{"Authorization":"Bearer jwt"},"image":"library/busybox","tag":"latest","digest":"sha256:00"}`, reg.URL)
	var cr map[string]string
	if code := call(t, "POST", r.URL+"/preheats", harborAuth, legacy, &cr); code != 200 || cr["ID"] == "" {
		t.Fatalf("legacy create = %d %v", code, cr)
	}
	var st map[string]string
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		call(t, "GET", r.URL+"/preheats/"+cr["ID"], harborAuth, nil, &st)
		if st["Status"] == "SUCCESS" || st["Status"] == "FAILED" {
			break
		}
		if st["Status"] != "WAITING" && st["Status"] != "RUNNING" {
			t.Fatalf("legacy status %v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if st["Status"] != "SUCCESS" || st["ID"] != cr["ID"] || st["finishTime"] == "" {
		t.Fatalf("legacy final %v", st)
	}

	// Kraken flavour: GET /health, then Harbor's capitalised envelope.
	resp, err := http.Get(r.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("kraken health without token = %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", r.URL+"/health", nil)
	req.Header.Set("Authorization", "Bearer harbor-pat-0123456789abcdef0123456789")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "OK\n" {
		t.Fatalf("kraken health = %d %q", resp.StatusCode, b)
	}
	before := agents["a1"].fetches.Load()
	kraken := fmt.Sprintf(`{"Events":[{"Id":"Abc123Def456Ghi789Jkl012Mno345Pq","TimeStamp":"2025-01-01T00:00:00.123456789Z","Action":"push","Target":{"MediaType":"application/vnd.docker.distribution.manifest.v2+json","Digest":"sha256:f3c97e3b","Repository":"library/busybox","Url":"%s/v2/library/busybox/manifests/latest","Tag":"latest"},"Request":null,"Actor":null}]}`, reg.URL)
	var kr WebhookResult
	if code := call(t, "POST", r.URL+"/registry/notifications", harborAuth, kraken, &kr); code != 200 || len(kr.Jobs) != 1 {
		t.Fatalf("kraken notify = %d %+v", code, kr)
	}
	waitJob(t, r.URL, kr.Jobs[0], StateSuccess, 10*time.Second)
	if agents["a1"].fetches.Load()-before != int64(len(blobs)) {
		t.Fatal("kraken job did not go to the default group")
	}
	if code := call(t, "POST", r.URL+"/registry/notifications", harborAuth, `{"Events":[]}`, &map[string]any{}); code != 400 {
		t.Fatalf("empty notification = %d, want 400", code)
	}
	// Redelivery of the same event: no second job.
	var again WebhookResult
	call(t, "POST", r.URL+"/registry/notifications", harborAuth, kraken, &again)
	if len(again.Jobs) != 0 || again.Ignored != 1 {
		t.Fatalf("duplicate kraken delivery: %+v", again)
	}
	var list struct{ Jobs []Job }
	call(t, "GET", r.URL+"/api/v1/jobs", nil, nil, &list)
	if len(list.Jobs) != 2 {
		t.Fatalf("jobs = %d, want 2 (legacy + kraken)", len(list.Jobs))
	}
	_ = json.Marshal
}

// Harbor's Dragonfly driver with policies that carry no extra attributes:
// scheduler_cluster_ids null and every scope, against a node without
// groups (what `shoal run` has) and Harbor's NONE auth mode on loopback.
func TestHarborDragonflyNullClustersEveryScope(t *testing.T) {
	reg := startRegistry(t)
	img := reg.push(t, "library/busybox:latest", 4<<10, 2)
	cfg := testConfig(reg.URL)
	cfg.Harbor.Auth = "none"
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "solo", "")
	heartbeat(t, r.URL, a.ID, a.URL())
	for _, scope := range []string{"", "all_peers", "all_seed_peers", "single_seed_peer"} {
		t.Run("scope="+scope, func(t *testing.T) {
			body := fmt.Sprintf(`{"type":"preheat","args":{"type":"image","url":"%s/v2/library/busybox/manifests/latest","headers":{"Authorization":"Bearer jwt"},"scope":%q},"scheduler_cluster_ids":null}`, reg.URL, scope)
			var j harbor.Job
			if code := call(t, "POST", r.URL+"/oapi/v1/jobs", nil, body, &j); code != 200 {
				t.Fatalf("create = %d %+v", code, j)
			}
			deadline := time.Now().Add(10 * time.Second)
			for j.State == "PENDING" && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
				call(t, "GET", fmt.Sprintf("%s/oapi/v1/jobs/%d", r.URL, j.ID), nil, nil, &j)
			}
			if j.State != "SUCCESS" {
				t.Fatalf("job %+v", j)
			}
			res := j.Result.JobStates[0].Results
			if len(res) != 1 || res[0].SchedulerClusterID != 0 || len(res[0].SuccessTasks) != len(blobDigests(t, img)) || res[0].SuccessTasks[0].Hostname != "solo" {
				t.Fatalf("results %+v", res)
			}
		})
	}
}

// A cluster id whose groups have no node still gets its results[] entry,
// with the failure; the job fails because that cluster got nothing.
func TestHarborDragonflyClusterWithoutNodes(t *testing.T) {
	reg := startRegistry(t)
	img := reg.push(t, "library/busybox:latest", 4<<10, 2)
	cfg := testConfig(reg.URL)
	cfg.Harbor.Clusters = map[int][]string{1: {"zone-a"}, 3: {"zone-c"}}
	cfg.Harbor.Auth = "none"
	r := startReplica(t, cfg, NewMemoryStore())
	a := startAgent(t, "a1", "zone-a")
	heartbeat(t, r.URL, a.ID, a.URL(), a.Group)
	body := fmt.Sprintf(`{"type":"preheat","args":{"type":"image","url":"%s/v2/library/busybox/manifests/latest","headers":{"Authorization":"Bearer jwt"},"scope":"all_peers"},"scheduler_cluster_ids":[1,3]}`, reg.URL)
	var j harbor.Job
	if code := call(t, "POST", r.URL+"/oapi/v1/jobs", nil, body, &j); code != 200 {
		t.Fatalf("create = %d", code)
	}
	deadline := time.Now().Add(10 * time.Second)
	for j.State == "PENDING" && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		call(t, "GET", fmt.Sprintf("%s/oapi/v1/jobs/%d", r.URL, j.ID), nil, nil, &j)
	}
	st := j.Result.JobStates[0]
	if j.State != "FAILURE" || !strings.Contains(st.Error, "zone-c") || len(st.Results) != 2 {
		t.Fatalf("job %+v", j)
	}
	nblobs := len(blobDigests(t, img))
	if r1 := st.Results[0]; r1.SchedulerClusterID != 1 || len(r1.SuccessTasks) != nblobs || len(r1.FailureTasks) != 0 {
		t.Fatalf("cluster 1 %+v", r1)
	}
	r3 := st.Results[1]
	if r3.SchedulerClusterID != 3 || len(r3.SuccessTasks) != 0 || len(r3.FailureTasks) != nblobs || !strings.Contains(r3.FailureTasks[0].Description, "no nodes in scheduler cluster 3") {
		t.Fatalf("cluster 3 %+v", r3)
	}
	// Only clusters without any node: refused at once.
	only3 := strings.Replace(body, `[1,3]`, `[3]`, 1)
	var e map[string]string
	if code := call(t, "POST", r.URL+"/oapi/v1/jobs", nil, only3, &e); code != 422 || !strings.Contains(e["errors"], "no target nodes") || e["code"] != CodeNoTargets {
		t.Fatalf("cluster without nodes: %d %v", code, e)
	}
}

// Harbor's Kraken driver treats any 2xx as a finished preheat and never
// polls: whatever is known to fail must be answered non-2xx.
func TestHarborKrakenRefusesWhatWouldFail(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "library/busybox:latest", 4<<10, 1)
	cfg := testConfig(reg.URL)
	// Configured, so the failure is reaching it, not the allow-list.
	cfg.Registries = []string{"http://127.0.0.1:1"}
	cfg.Harbor.Auth = "none"
	r := startReplica(t, cfg, NewMemoryStore())
	notify := func(registry, repo string) (int, map[string]any) {
		body := fmt.Sprintf(`{"Events":[{"Id":"%d","TimeStamp":"2025-01-01T00:00:00Z","Action":"push","Target":{"MediaType":"application/vnd.docker.distribution.manifest.v2+json","Digest":"sha256:f3c97e3b","Repository":%q,"Url":"%s/v2/%s/manifests/latest","Tag":"latest"}}]}`, time.Now().UnixNano(), repo, registry, repo)
		var out map[string]any
		return call(t, "POST", r.URL+"/registry/notifications", nil, body, &out), out
	}
	if code, out := notify(reg.URL, "library/busybox"); code != 422 || !strings.Contains(fmt.Sprint(out["error"]), "no target nodes") || out["code"] != "INVALID" {
		t.Fatalf("no nodes: %d %v, want 422", code, out)
	}
	a := startAgent(t, "solo", "")
	heartbeat(t, r.URL, a.ID, a.URL())
	if code, out := notify(reg.URL, "library/nothere"); code != 404 || !strings.Contains(fmt.Sprint(out["error"]), "not found") {
		t.Fatalf("image not found: %d %v, want 404", code, out)
	}
	if code, out := notify("http://127.0.0.1:1", "library/busybox"); code != 502 || !strings.Contains(fmt.Sprint(out["error"]), "unreachable") {
		t.Fatalf("registry unreachable: %d %v, want 502", code, out)
	}
	code, out := notify(reg.URL, "library/busybox")
	if code != 200 {
		t.Fatalf("good notification: %d %v", code, out)
	}
	waitJob(t, r.URL, int64(out["jobs"].([]any)[0].(float64)), StateSuccess, 10*time.Second)
}
