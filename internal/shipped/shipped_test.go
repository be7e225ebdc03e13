package shipped

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/shoalproject/shoal/internal/secret"
)

// envRef finds the env:NAME references a file's keys make (not those in
// comments).
var envRef = regexp.MustCompile(`env:([A-Za-z_][A-Za-z0-9_]*)`)

func refs(t *testing.T, path string) []string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	var out []string
	for _, line := range strings.Split(string(b), "\n") {
		line, _, _ = strings.Cut(line, "#")
		for _, m := range envRef.FindAllStringSubmatch(line, -1) {
			if !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
			}
		}
	}
	return out
}

// TestShippedConfigs loads every file in configs/ through its component's
// loader: with each reference set to a strong secret it starts; with any
// one of them unset, or set to a placeholder, a short value or the literal
// reference, it refuses. So every secret a shipped file names goes through
// the strength rule, whichever key it is under.
func TestShippedConfigs(t *testing.T) {
	for _, c := range Components {
		path := filepath.Join("..", "..", "configs", c+".yml")
		t.Run(c, func(t *testing.T) {
			names := refs(t, path)
			if len(names) == 0 {
				t.Fatalf("%s names no secret; is the test reading the right file?", path)
			}
			set := func(weak string, value string) {
				for _, n := range names {
					v := secret.Generate()
					if n == weak {
						v = value
					}
					t.Setenv(n, v)
				}
			}
			set("", "")
			if err := Load(c, path); err != nil {
				t.Fatalf("with every reference set: %v", err)
			}
			for _, n := range names {
				for _, bad := range []string{"change-me", "Zq9wX", "env:" + n, ""} {
					set(n, bad)
					if err := Load(c, path); err == nil {
						t.Errorf("%s=%q accepted", n, bad)
					} else if bad != "" && strings.Contains(err.Error(), bad) && bad != "env:"+n {
						t.Errorf("%s: the error shows the value: %v", n, err)
					}
				}
				os.Unsetenv(n)
				if err := Load(c, path); err == nil {
					t.Errorf("%s unset: accepted", n)
				}
			}
		})
	}
}
