package image

import (
	"strings"
	"testing"
)

func TestCheckRef(t *testing.T) {
	for _, tc := range []struct {
		image, err string
	}{
		{"library/busybox:latest", ""},
		{"127.0.0.1:5000/a/b-c/d__e:v1.2_3", ""},
		{"busybox@sha256:" + strings.Repeat("a", 64), ""},
		{"Library/Busybox:latest", "must be lowercase"},
		{"library/busy--box-:x", "only lowercase letters"},
		{"library//busybox", "only lowercase letters"},
		{"busybox:-bad", "tag"},
		{"busybox:" + strings.Repeat("t", 129), "tag"},
		{"busybox@sha256", "digest"},
		{"busybox@sha256:", "digest"},
	} {
		ref, err := Parse(tc.image, "http://127.0.0.1:5000", nil)
		if err == nil {
			err = Check(ref, tc.image)
		}
		if tc.err == "" && err != nil || tc.err != "" && (err == nil || !strings.Contains(err.Error(), tc.err)) {
			t.Errorf("%s: %v, want %q", tc.image, err, tc.err)
		}
	}
}

// FuzzImageRef: whatever a form or webhook sends, parsing and checking
// never panic, and what passes has a repository and reference a registry
// URL can carry without escaping.
func FuzzImageRef(f *testing.F) {
	for _, s := range []string{"library/busybox:latest", "h:5000/a@sha256:00", "https://h/v2/a/b/manifests/t", "A:b", ":", "@", "a/", "localhost/x:y"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := Parse(s, "http://127.0.0.1:5000", nil)
		if err != nil || Check(ref, s) != nil {
			return
		}
		if ref.Repository == "" || ref.Reference == "" || strings.ContainsAny(ref.Repository+ref.Reference, " ?#%\n") {
			t.Fatalf("%q accepted as %+v", s, ref)
		}
	})
}
