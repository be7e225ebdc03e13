package secret

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	good := Generate()
	dir := t.TempDir()
	file := filepath.Join(dir, "s")
	if err := os.WriteFile(file, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	big := filepath.Join(dir, "big")
	if err := os.WriteFile(big, make([]byte, maxLen+10), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHOAL_TEST_SECRET", good)
	for _, tc := range []struct {
		value, want, err string
	}{
		{value: good, want: good},
		{value: "env:SHOAL_TEST_SECRET", want: good},
		{value: "file:" + file, want: good},
		{value: "env:SHOAL_TEST_UNSET", err: "SHOAL_TEST_UNSET is not set"},
		{value: "file:" + filepath.Join(dir, "none"), err: "no such file"},
		{value: "file:" + big, err: "longer than"},
		{value: "", err: "is not set"},
		{value: "change-me-tracker-secret-which-is-long-enough", err: "placeholder"},
		{value: strings.Repeat("a", 64), err: "placeholder"},
		{value: "short", err: "shorter than 32"},
	} {
		got, err := Resolve("tracker.secret", tc.value)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("Resolve(%.20q) error = %v, want %q", tc.value, err, tc.err)
			}
			if err != nil && len(tc.value) > 8 && !strings.HasPrefix(tc.value, "file:") && !strings.HasPrefix(tc.value, "env:") && strings.Contains(err.Error(), tc.value) {
				t.Errorf("error reflects the secret: %v", err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("Resolve(%.20q) = %q, %v", tc.value, got, err)
		}
	}
}

func TestResolveAllNamesTheEntry(t *testing.T) {
	_, err := ResolveAll("secrets", []string{Generate(), "change-me-previous"})
	if err == nil || !strings.Contains(err.Error(), "secrets[1]") {
		t.Fatalf("err = %v, want it to name secrets[1]", err)
	}
}

func TestResolveRotatingCurrentFirst(t *testing.T) {
	cur, old := Generate(), Generate()
	got, err := ResolveRotating("cluster.secret", cur, "cluster.previousSecrets", []string{old})
	if err != nil || len(got) != 2 || got[0] != cur || got[1] != old {
		t.Fatalf("ResolveRotating = %v, %v", len(got), err)
	}
	if _, err := ResolveRotating("cluster.secret", "", "cluster.previousSecrets", nil); err == nil || !strings.Contains(err.Error(), "cluster.secret") {
		t.Fatalf("missing current secret: %v", err)
	}
}
