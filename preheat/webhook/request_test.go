package webhook

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestPolicies(t *testing.T) {
	ps, err := Compile([]Policy{
		{Name: "releases", Repository: "library/*", TagRegex: `^v\d+$`, Groups: []string{"a"}},
		{Name: "latest", Repository: "library/*", Tag: "lat*", Groups: []string{"b"}, Platforms: []string{"linux/arm64"}},
		{Name: "rest", Repository: "*/*", Groups: []string{"c"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		repo, tag string
		want      Target
		ok        bool
	}{
		{"library/web", "v1", Target{Groups: []string{"a"}}, true},
		{"library/web", "latest", Target{Groups: []string{"b"}, Platforms: []string{"linux/arm64"}}, true},
		{"library/web", "", Target{Groups: []string{"c"}}, true}, // by digest: no tag glob or regexp matches
		{"team/app", "v1", Target{Groups: []string{"c"}}, true},
		{"toplevel", "v1", Target{}, false},
	} {
		got, ok := ps.Match(tc.repo, tc.tag)
		if ok != tc.ok || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("Match(%q, %q) = %+v %v, want %+v %v", tc.repo, tc.tag, got, ok, tc.want, tc.ok)
		}
	}
	for _, bad := range []Policy{{Name: "no repo"}, {Repository: "[x"}, {Repository: "a/*", Tag: "[x"}, {Repository: "a/*", TagRegex: "("}} {
		if _, err := Compile([]Policy{bad}); err == nil {
			t.Errorf("Compile(%+v) accepted", bad)
		}
	}
	if got, ok := Policies(nil).Match("a/b", "1"); ok {
		t.Errorf("no policies matched: %+v", got)
	}
}

func manifestPush(n int, repo string) Envelope {
	var env Envelope
	for i := range n {
		var ev Event
		ev.ID, ev.Action = fmt.Sprintf("e%d", i), "push"
		ev.Target.MediaType, ev.Target.Repository, ev.Target.Tag = "application/vnd.oci.image.manifest.v1+json", repo, fmt.Sprintf("v%d", i)
		ev.Target.URL = "https://r/v2/" + repo + "/manifests/" + ev.Target.Tag
		env.Events = append(env.Events, ev)
	}
	return env
}

func harborPush(n int, typ string) HarborPayload {
	data := &HarborEventData{}
	data.Repository.RepoFullName = "library/web"
	for i := range n {
		data.Resources = append(data.Resources, struct {
			Digest      string `json:"digest"`
			Tag         string `json:"tag"`
			ResourceURL string `json:"resource_url"`
		}{Digest: fmt.Sprintf("sha256:%d", i), Tag: fmt.Sprintf("v%d", i), ResourceURL: "h:1/library/web:v"})
	}
	return HarborPayload{Type: typ, ID: "d1", EventData: data}
}

// A request is refused whole, with its status, before any job starts.
func TestTranslator(t *testing.T) {
	ps, _ := Compile([]Policy{{Repository: "library/*", Groups: []string{"g"}}})
	tr := Translator{Registry: "http://reg:5000", Policies: ps, MaxEvents: 3, MaxJobs: 2}
	for _, tc := range []struct {
		name    string
		do      func() (Batch, error)
		status  int    // 0: accepted
		msg     string // in the refusal
		jobs    int
		ignored int
	}{
		{"distribution", func() (Batch, error) { return tr.Distribution(manifestPush(2, "library/web")) }, 0, "", 2, 0},
		{"distribution, no policy", func() (Batch, error) { return tr.Distribution(manifestPush(3, "team/web")) }, 0, "", 0, 3},
		{"distribution, too many events", func() (Batch, error) { return tr.Distribution(manifestPush(4, "team/web")) }, 413, "4 events; at most 3", 0, 0},
		{"distribution, too many jobs", func() (Batch, error) { return tr.Distribution(manifestPush(3, "library/web")) }, 422, "3 preheat jobs; at most 2", 0, 0},
		{"harbor", func() (Batch, error) { return tr.Harbor(harborPush(2, "PUSH_ARTIFACT")) }, 0, "", 2, 0},
		{"harbor, not a push", func() (Batch, error) { return tr.Harbor(harborPush(9, "DELETE_ARTIFACT")) }, 0, "", 0, 1},
		{"harbor, too many resources", func() (Batch, error) { return tr.Harbor(harborPush(4, "PUSH_ARTIFACT")) }, 413, "4 resources", 0, 0},
		{"harbor, too many jobs", func() (Batch, error) { return tr.Harbor(harborPush(3, "PUSH_ARTIFACT")) }, 422, "none was started", 0, 0},
		{"kraken", func() (Batch, error) { return tr.Kraken(manifestPush(2, "any/repo"), []string{"k"}) }, 0, "", 2, 0},
		{"kraken, no events", func() (Batch, error) { return tr.Kraken(Envelope{}, nil) }, 400, "no events", 0, 0},
		{"kraken, too many events", func() (Batch, error) { return tr.Kraken(manifestPush(4, "any/repo"), nil) }, 413, "maxWebhookEvents", 0, 0},
		{"kraken, too many jobs", func() (Batch, error) { return tr.Kraken(manifestPush(3, "any/repo"), nil) }, 422, "maxWebhookJobs", 0, 0},
	} {
		b, err := tc.do()
		var r *Refusal
		switch {
		case tc.status != 0:
			if !errors.As(err, &r) || r.Status != tc.status || !strings.Contains(r.Msg, tc.msg) || len(b.Triggers) != 0 {
				t.Errorf("%s: %+v %v, want a %d refusal saying %q", tc.name, b, err, tc.status, tc.msg)
			}
		case err != nil || len(b.Triggers) != tc.jobs || b.Ignored != tc.ignored:
			t.Errorf("%s: %+v %v, want %d triggers, %d ignored", tc.name, b, err, tc.jobs, tc.ignored)
		}
	}
}

func TestCheckContentType(t *testing.T) {
	for ct, ok := range map[string]bool{"": true, EventsV1: true, EventsV2 + "; charset=utf-8": true, "application/json": true,
		"text/plain": false, "application/x-www-form-urlencoded": false} {
		err := CheckContentType(ct)
		var r *Refusal
		if ok != (err == nil) || (!ok && (!errors.As(err, &r) || r.Status != http.StatusUnsupportedMediaType)) {
			t.Errorf("%q: %v", ct, err)
		}
	}
}

// seenSet is a DeliveryStore that remembers forever (expiry is the
// stores' suite's).
type seenSet struct {
	seen map[string]bool
	err  error
}

func (s *seenSet) MarkSeen(_ context.Context, _ time.Time, key string, ttl time.Duration) (bool, error) {
	if s.err != nil {
		return false, s.err
	}
	if ttl != SeenTTL {
		return false, fmt.Errorf("ttl %s", ttl)
	}
	first := !s.seen[key]
	s.seen[key] = true
	return first, nil
}

func TestStartAll(t *testing.T) {
	ctx := context.Background()
	b := Batch{Ignored: 1, Triggers: []Trigger{{Delivery: "d1", Image: "r/a:1"}, {Delivery: "d2", URL: "https://r/v2/b/manifests/1"}, {Delivery: "d1", Image: "r/a:1"}, {Delivery: "d3", Image: "r/c:1"}}}
	refused := errors.New("refused")
	var started []string
	start := func(_ context.Context, tr Trigger) (int64, error) {
		if tr.Delivery == "d2" {
			return 0, refused
		}
		started = append(started, tr.Delivery)
		return int64(len(started)), nil
	}
	seen := &seenSet{seen: map[string]bool{"d3": true}}
	res := StartAll(ctx, seen, time.Now(), b, start)
	// d1 starts, d2 fails, d1 again and d3 (delivered before) are duplicates.
	want := Result{Jobs: []int64{1}, Ignored: 3, Errors: []string{"https://r/v2/b/manifests/1: refused"}, FirstErr: refused}
	if !reflect.DeepEqual(res, want) || !reflect.DeepEqual(started, []string{"d1"}) {
		t.Fatalf("StartAll = %+v (started %v), want %+v", res, started, want)
	}
	// A store that fails starts nothing and says so, for every trigger.
	res = StartAll(ctx, &seenSet{err: errors.New("store down")}, time.Now(), b, start)
	if len(res.Jobs) != 0 || len(res.Errors) != 4 || res.FirstErr != nil || res.Errors[0] != "store down" {
		t.Fatalf("failing store: %+v", res)
	}
}
