package agent

import (
	"reflect"
	"testing"
)

func TestMirrorRequestKind(t *testing.T) {
	for path, want := range map[string]string{
		"/v2":                              "base",
		"/v2/":                             "base",
		"/v2/lib/x/manifests/v1":           "manifest",
		"/v2/lib/x/blobs/sha256:ab":        "blob",
		"/v2/blobs/manifests/v1":           "manifest", // a repository named "blobs"
		"/v2/lib/manifests/blobs/sha256:a": "blob",
		"/v2/lib/x/tags/list":              "tags",
		"/v2/lib/x/referrers/sha256:ab":    "referrers",
		"/v2/_catalog":                     "other",
		"/v2/blobs/":                       "other",
	} {
		if got := mirrorRequestKind(path); got != want {
			t.Errorf("mirrorRequestKind(%q) = %q, want %q", path, got, want)
		}
	}
}

// Issue 21: no type holds more than about a dozen fields. The metric
// handles are grouped by concern (mirror, download, cache); a group that
// grows past the limit is split, not the other way round.
func TestMetricsGroupedByConcern(t *testing.T) {
	const limit = 12
	top := reflect.TypeOf(agentMetrics{})
	if top.NumField() > limit {
		t.Errorf("agentMetrics has %d fields, more than %d", top.NumField(), limit)
	}
	for i := range top.NumField() {
		f := top.Field(i)
		if f.Type.Kind() != reflect.Struct || !f.Anonymous {
			continue
		}
		if n := f.Type.NumField(); n > limit {
			t.Errorf("agentMetrics.%s has %d fields, more than %d", f.Name, n, limit)
		}
	}
	for _, group := range []string{"mirrorMetrics", "downloadMetrics", "cacheMetrics"} {
		if _, ok := top.FieldByName(group); !ok {
			t.Errorf("agentMetrics has no %s group", group)
		}
	}
}
