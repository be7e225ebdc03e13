package agent

import "testing"

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
