package harbor

import (
	"encoding/json"
	"errors"
	"net/http"
	"reflect"
	"testing"
	"time"

	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/webhook"
)

var cfg = Config{
	Clusters:      map[int][]string{1: {"zone-a", "zone-b"}, 2: {"zone-b", "gpu"}, 3: {"empty"}},
	DefaultGroups: []string{"zone-a"},
	SeedGroups:    []string{"zone-b"},
}

func TestGroups(t *testing.T) {
	for _, tc := range []struct {
		ids    []int
		scope  string
		want   []string
		single bool
		bad    bool
	}{
		{nil, "", []string{"zone-a"}, false, false},
		{[]int{1}, "all_peers", []string{"zone-a", "zone-b"}, false, false},
		{[]int{1, 2}, "all_seed_peers", []string{"zone-b", "zone-b"}, false, false},
		{[]int{2}, "single_seed_peer", []string{"zone-b"}, true, false},
		{nil, "all_seed_peers", nil, false, true},      // default groups hold no seed group
		{[]int{3}, "all_seed_peers", nil, false, true}, // no seed group among them
		{[]int{9}, "", nil, false, true},               // unknown cluster
		{nil, "some_peers", nil, false, true},
	} {
		got, single, err := cfg.Groups(tc.ids, tc.scope)
		var r *Refusal
		if tc.bad {
			if !errors.As(err, &r) {
				t.Errorf("%v %q: err %v, want a refusal", tc.ids, tc.scope, err)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) || single != tc.single {
			t.Errorf("%v %q = %v %v %v, want %v %v", tc.ids, tc.scope, got, single, err, tc.want, tc.single)
		}
	}
}

func TestTranslate(t *testing.T) {
	var req CreateRequest
	req.Type, req.Args.Type, req.Args.URL, req.Args.Scope = "preheat", "image", "https://r/v2/a/manifests/1", "single_seed_peer"
	req.Args.Headers = map[string]string{"Authorization": "Basic x"}
	req.SchedulerClusterIDs = []int{2}
	got, err := cfg.Translate(req)
	want := Request{URL: req.Args.URL, Headers: req.Args.Headers, Groups: []string{"zone-b"}, OnePerGroup: true, ClusterIDs: []int{2}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Translate = %+v %v, want %+v", got, err, want)
	}
	for name, mut := range map[string]func(*CreateRequest){
		"job type":   func(r *CreateRequest) { r.Type = "file" },
		"image type": func(r *CreateRequest) { r.Args.Type = "file" },
		"no url":     func(r *CreateRequest) { r.Args.URL = "" },
		"scope":      func(r *CreateRequest) { r.Args.Scope = "x" },
	} {
		bad := req
		mut(&bad)
		var r *Refusal
		if _, err := cfg.Translate(bad); !errors.As(err, &r) {
			t.Errorf("%s: err %v, want a refusal", name, err)
		}
	}
}

func TestView(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	j := &jobs.Job{ID: 7, State: jobs.StateFailure, Error: "1 of 4 fetches failed", Times: jobs.Times{CreatedAt: now, UpdatedAt: now},
		Blobs:      []jobs.Blob{{Digest: "sha256:a"}, {Digest: "sha256:b"}},
		Targets:    []jobs.Target{{NodeID: "n1", Address: "https://10.0.0.1:65003", Groups: []string{"zone-b"}}, {NodeID: "n2", Address: "https://10.0.0.2:65003"}},
		ClusterIDs: []int{1, 3}}
	ps := []jobs.Progress{
		{NodeID: "n1", Digest: "sha256:a", State: jobs.StateSuccess},
		{NodeID: "n1", Digest: "sha256:b", State: jobs.StateFailure, Error: "boom"},
		{NodeID: "n2", Digest: "sha256:a", State: jobs.StateSuccess},
	}
	v := cfg.View(j, ps, func(d string) string { return "https://r/v2/a/blobs/" + d })
	if v.ID != 7 || v.TaskID != "shoal-7" || v.State != "FAILURE" || len(v.Result.JobStates) != 1 {
		t.Fatalf("view %+v", v)
	}
	rs := v.Result.JobStates[0].Results
	// n2 has no group: cluster 0; n1's zone-b is first in cluster 1;
	// cluster 3 was asked for and had no node.
	if len(rs) != 3 || rs[0].SchedulerClusterID != 0 || rs[1].SchedulerClusterID != 1 || rs[2].SchedulerClusterID != 3 {
		t.Fatalf("results %+v", rs)
	}
	if len(rs[0].SuccessTasks) != 1 || len(rs[0].FailureTasks) != 1 || rs[0].FailureTasks[0].Description != "not fetched: job FAILURE" {
		t.Fatalf("cluster 0 %+v", rs[0])
	}
	if len(rs[1].SuccessTasks) != 1 || rs[1].SuccessTasks[0].IP != "10.0.0.1" || rs[1].FailureTasks[0].Description != "boom" {
		t.Fatalf("cluster 1 %+v", rs[1])
	}
	if len(rs[2].FailureTasks) != 2 || rs[2].FailureTasks[0].URL != "https://r/v2/a/blobs/sha256:a" {
		t.Fatalf("cluster 3 %+v", rs[2])
	}
	if st := LegacyStatus(j); st["Status"] != "FAILED" || st["ID"] != "7" || st["finishTime"] != "" {
		t.Fatalf("legacy %v", st)
	}
}

func TestLegacy(t *testing.T) {
	li := LegacyImage{Type: "image", URL: "https://r/v2/a/manifests/1", Headers: map[string]any{"Authorization": "Bearer x", "n": 1.0}}
	got, err := cfg.Legacy(li)
	want := Request{URL: li.URL, Headers: map[string]string{"Authorization": "Bearer x"}, Groups: []string{"zone-a"}}
	if err != nil || !reflect.DeepEqual(got, want) {
		t.Fatalf("Legacy = %+v %v, want %+v", got, err, want)
	}
	for _, bad := range []LegacyImage{{Type: "file", URL: li.URL}, {Type: "image"}} {
		var r *Refusal
		if _, err := cfg.Legacy(bad); !errors.As(err, &r) || r.Status != http.StatusBadRequest {
			t.Errorf("%+v: err %v, want a 400 refusal", bad, err)
		}
	}
	if g := (Config{}).KrakenGroups(); g != nil {
		t.Errorf("no default groups: %v, want all nodes (nil)", g)
	}
}

func TestCreated(t *testing.T) {
	j := &jobs.Job{ID: 3, State: jobs.StateSuccess, Blobs: []jobs.Blob{{Digest: "sha256:a"}}}
	v := cfg.Created(j, nil, func(d string) string { return d })
	if v.State != "PENDING" || v.Result.State != "SUCCESS" {
		t.Fatalf("created %+v", v)
	}
}

func TestKrakenAnswer(t *testing.T) {
	for _, tc := range []struct {
		res        webhook.Result
		status     int
		wantStatus int
		wantBody   string
	}{
		{webhook.Result{Jobs: []int64{1, 2}}, 0, 200, `{"jobs":[1,2],"ignored":0}`},
		{webhook.Result{Jobs: []int64{}, Ignored: 2}, 0, 200, `{"jobs":[],"ignored":2}`},
		{webhook.Result{Jobs: []int64{1}, Errors: []string{"a: no nodes", "b: gone"}}, 422, 422,
			`{"code":"INVALID","error":"a: no nodes; b: gone","errors":["a: no nodes","b: gone"],"jobs":[1]}`},
		// A failure without a status of its own (the store failed) is a 502.
		{webhook.Result{Jobs: []int64{}, Errors: []string{"store down"}}, 0, 502,
			`{"code":"UNAVAILABLE","error":"store down","errors":["store down"],"jobs":[]}`},
	} {
		status, body := KrakenAnswer(tc.res, tc.status)
		b, _ := json.Marshal(body)
		if status != tc.wantStatus || string(b) != tc.wantBody {
			t.Errorf("KrakenAnswer(%+v, %d) = %d %s, want %d %s", tc.res, tc.status, status, b, tc.wantStatus, tc.wantBody)
		}
	}
}
