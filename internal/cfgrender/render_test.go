package cfgrender

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func env(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
}

func TestExpand(t *testing.T) {
	vars := map[string]string{
		"SECRET": `a"b\c` + "\nd",
		"IP":     "10.0.0.7",
		"EMPTY":  "",
	}
	for _, tc := range []struct {
		name, in, want, err string
	}{
		{name: "plain", in: "a: 1\n", want: "a: 1\n"},
		{name: "substring", in: `u: "http://${IP}:65002"`, want: `u: "http://10.0.0.7:65002"`},
		{name: "escaped", in: `s: "${SECRET}"`, want: `s: "a\"b\\c\nd"`},
		{name: "empty value", in: `s: "${EMPTY}"`, want: `s: ""`},
		{name: "dollar kept", in: `re: '^v\d+$'`, want: `re: '^v\d+$'`},
		{name: "unset", in: `s: "${NOPE}" t: "${ALSO}"`, err: "unset variables: ALSO, NOPE"},
		{name: "bad name", in: `s: "${1X}"`, err: "not a variable name"},
		{name: "unterminated", in: `s: "${IP`, err: "unterminated"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Expand([]byte(tc.in), env(vars))
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if string(got) != tc.want {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

// The point of the escaping: whatever a secret holds, the YAML around it
// keeps its shape and the value comes back byte for byte.
func TestExpandRoundTripsThroughYAML(t *testing.T) {
	for _, v := range []string{`"`, `\`, "\n", "a: b", "- x", "#", "\t'\"", "ünï", "\x01"} {
		out, err := Expand([]byte("k: \"${V}\"\nother: 1\n"), env(map[string]string{"V": v}))
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]any
		if err := yaml.Unmarshal(out, &m); err != nil {
			t.Fatalf("%q: %v\n%s", v, err, out)
		}
		if m["k"] != v || m["other"] != 1 {
			t.Fatalf("%q: got %#v", v, m)
		}
	}
}

func TestExpandErrorHidesValues(t *testing.T) {
	_, err := Expand([]byte(`a: "${KNOWN}" b: "${UNKNOWN}"`), env(map[string]string{"KNOWN": "s3cr3t"}))
	if err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Fatalf("err = %v", err)
	}
}
