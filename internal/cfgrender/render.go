// Package cfgrender fills ${NAME} placeholders of a configuration template
// from the environment. It exists so that a configuration can live in a
// ConfigMap while its secrets live in Kubernetes Secrets (handed to the
// rendering step as environment variables): the rendered file never exists
// outside the pod's memory-backed volume, and Shoal's own loaders read it
// unchanged.
package cfgrender

import (
	"encoding/json"
	"fmt"
	"sort"
	"strings"
)

// maxNameLen bounds a placeholder name; environment variable names longer
// than this are a template mistake, not a real variable.
const maxNameLen = 128

// Expand replaces every ${NAME} in tmpl with lookup(NAME), escaped for a
// double-quoted YAML string: placeholders belong inside "…" in templates, so
// a secret holding quotes, backslashes or newlines cannot change the YAML
// around it. NAME is [A-Za-z_][A-Za-z0-9_]*. A `$` not followed by `{` is
// copied as is (regular expressions in configs end in `$`). Names lookup does
// not know, and malformed placeholders, are errors; the error names the
// placeholders, never a value.
func Expand(tmpl []byte, lookup func(string) (string, bool)) ([]byte, error) {
	s := string(tmpl)
	var out strings.Builder
	out.Grow(len(s))
	missing := map[string]bool{}
	for {
		i := strings.Index(s, "${")
		if i < 0 {
			out.WriteString(s)
			break
		}
		out.WriteString(s[:i])
		rest := s[i+2:]
		j := strings.IndexByte(rest, '}')
		if j < 0 {
			return nil, fmt.Errorf("config template: unterminated placeholder at byte %d", len(tmpl)-len(s)+i)
		}
		name := rest[:j]
		if !validName(name) {
			return nil, fmt.Errorf("config template: placeholder ${%.40s} is not a variable name ([A-Za-z_][A-Za-z0-9_]*)", name)
		}
		v, ok := lookup(name)
		if !ok {
			missing[name] = true
		} else {
			out.WriteString(yamlQuotedBody(v))
		}
		s = rest[j+1:]
	}
	if len(missing) > 0 {
		names := make([]string, 0, len(missing))
		for n := range missing {
			names = append(names, n)
		}
		sort.Strings(names)
		return nil, fmt.Errorf("config template: unset variables: %s", strings.Join(names, ", "))
	}
	return []byte(out.String()), nil
}

func validName(n string) bool {
	if n == "" || len(n) > maxNameLen {
		return false
	}
	for i, c := range n {
		switch {
		case c == '_', c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z':
		case c >= '0' && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}

// yamlQuotedBody is v escaped for the inside of a double-quoted YAML scalar.
// A JSON string is a valid YAML double-quoted scalar (YAML 1.2 is a JSON
// superset), so JSON's escaping is YAML's.
func yamlQuotedBody(v string) string {
	b, _ := json.Marshal(v) // a string always marshals
	return string(b[1 : len(b)-1])
}
