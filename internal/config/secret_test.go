package config

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/shoalproject/shoal/internal/secret"
)

type withSecrets struct {
	Token    Secret     `yaml:"token"`
	Tokens   Tokens     `yaml:"tokens"`
	Password Credential `yaml:"password"`
	Nested   struct {
		Tokens Tokens `yaml:"tokens"`
	} `yaml:"nested"`
}

// TestSecretDecode: every form resolves when the file is decoded, and every
// refusal (unset variable, missing file, short, placeholder) fails the
// decode naming the key and line, never the value.
func TestSecretDecode(t *testing.T) {
	good := secret.Generate()
	file := filepath.Join(t.TempDir(), "tok")
	if err := os.WriteFile(file, []byte(good+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHOAL_TEST_TOK", good)
	t.Setenv("SHOAL_TEST_WEAK", "change-me-change-me-change-me-change-me")
	for _, tc := range []struct {
		name, in, wantErr string
		check             func(*withSecrets) bool
	}{
		{name: "literal", in: "token: " + good, check: func(w *withSecrets) bool { return w.Token.Value() == good }},
		{name: "env", in: "tokens: [env:SHOAL_TEST_TOK]", check: func(w *withSecrets) bool { return w.Tokens.Match(good) && !w.Tokens.Match("env:SHOAL_TEST_TOK") }},
		{name: "file", in: "nested:\n  tokens:\n    - file:" + file, check: func(w *withSecrets) bool { return w.Nested.Tokens.Match(good) }},
		{name: "short credential is fine", in: "password: pw", check: func(w *withSecrets) bool { return w.Password.Value() == "pw" }},
		{name: "unset env", in: "tokens:\n  - env:SHOAL_TEST_UNSET_X", wantErr: "line 2: tokens[0]: environment variable SHOAL_TEST_UNSET_X is not set"},
		{name: "placeholder via env", in: "token: env:SHOAL_TEST_WEAK", wantErr: "line 1: token is a placeholder"},
		{name: "placeholder", in: "nested: {tokens: [change-me]}", wantErr: "nested.tokens[0] is a placeholder"},
		{name: "two characters", in: "token: ab", wantErr: "line 1: token is 2 bytes, shorter than 32"},
		{name: "missing file", in: "token: file:/nonexistent/x", wantErr: "token: open /nonexistent/x"},
		{name: "unset credential env", in: "password: env:SHOAL_TEST_UNSET_X", wantErr: "password: environment variable"},
		{name: "not a string", in: "token: [a]", wantErr: "want a string"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var w withSecrets
			err := Decode([]byte(tc.in), &w, nil)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want %q", err, tc.wantErr)
				}
				if strings.Contains(err.Error(), "change-me-change") {
					t.Fatalf("error shows the value: %v", err)
				}
				return
			}
			if err != nil || !tc.check(&w) {
				t.Fatalf("err = %v, decoded %v", err, w)
			}
		})
	}
}

// TestSecretNeverPrinted: every way a config gets printed shows the source
// or [redacted], never the value.
func TestSecretNeverPrinted(t *testing.T) {
	good := secret.Generate()
	t.Setenv("SHOAL_TEST_TOK", good)
	w := withSecrets{Token: NewSecret(good), Tokens: NewTokens(good, "env:SHOAL_TEST_TOK"), Password: NewCredential(good)}
	j, _ := json.Marshal(w)
	y, _ := yaml.Marshal(w)
	for _, out := range []string{fmt.Sprint(w), fmt.Sprintf("%v %+v %#v %s %q %x", w, w, w, w.Token, w.Token, w.Token),
		fmt.Sprintf("%#v %v", w.Password, w.Tokens), w.Token.String(), string(j), string(y)} {
		if strings.Contains(out, good) || strings.Contains(out, good[:16]) || strings.Contains(out, fmt.Sprintf("%x", good[:8])) {
			t.Fatalf("value printed: %s", out)
		}
	}
	if !strings.Contains(string(y), "env:SHOAL_TEST_TOK") || !strings.Contains(string(j), redacted) {
		t.Fatalf("want the source or %s: %s %s", redacted, j, y)
	}
}

func TestTokensMatch(t *testing.T) {
	a, b := secret.Generate(), secret.Generate()
	ts := NewTokens(a, b)
	if !ts.Match(a) || !ts.Match(b) || ts.Match("") || ts.Match(a[:31]) || ts.Match(a+"x") {
		t.Fatal("match")
	}
	if (Tokens{}).Match("") || NewTokens("short").Match("short") {
		t.Fatal("an empty or refused token matched")
	}
	if err := NewTokens(a, "short").Check("apiTokens"); err == nil || !strings.Contains(err.Error(), "apiTokens[1]") {
		t.Fatalf("check: %v", err)
	}
	var unset Secret
	if unset.IsSet() || unset.Check("k") == nil || NewSecret(a).Check("k") != nil {
		t.Fatal("unset")
	}
}

// A config handed on as JSON keeps its references and never its values.
func TestSecretJSONRoundTrip(t *testing.T) {
	good := secret.Generate()
	t.Setenv("SHOAL_TEST_TOK", good)
	in := withSecrets{Token: NewSecret("env:SHOAL_TEST_TOK"), Password: NewCredential(good)}
	b, err := json.Marshal(in)
	if err != nil || strings.Contains(string(b), good) {
		t.Fatalf("%s %v", b, err)
	}
	var out withSecrets
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if out.Token.Value() != good || out.Password.Value() == good {
		t.Fatalf("round trip: token %v, password %v", out.Token.Value() == good, out.Password)
	}
}
