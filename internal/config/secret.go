package config

import (
	"crypto/subtle"
	"encoding/json"
	"fmt"
	"io"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/shoalproject/shoal/internal/secret"
)

// redacted is what every printing of a Secret or Credential shows.
const redacted = "[redacted]"

// Secret is a configuration value Shoal chooses itself (a token, a join
// secret, a signing key): the value, env:NAME or file:/path, resolved when
// the configuration is decoded and refused there when unresolvable, short
// or a placeholder (internal/secret's rule). Being a type rather than a
// string with a comment means a new key cannot skip the rule, and no
// printing of a config (%v, %+v, %#v, JSON, YAML) shows the value.
//
// The zero Secret is unset; a component's Validate decides whether that is
// allowed (Check) or means "off" (IsSet).
type Secret struct{ v resolved }

// Credential is a Secret Shoal does not choose (a Redis password, a
// registry login): the same forms and the same redaction, no strength
// rule, since refusing a short one would only stop the operator.
type Credential struct{ v resolved }

// resolved is a reference with what it read. The read error is kept as
// text so that two configs decoded from the same file compare equal; raw
// is kept even when too weak, so Check can say why under the key's name,
// but Value hands out only a usable one.
type resolved struct {
	ref, raw, readErr string
	strong            bool
}

func resolve(ref string, strong bool) resolved {
	r := resolved{ref: ref, strong: strong}
	if ref == "" {
		return r
	}
	v, err := secret.ReadRef(ref)
	if err != nil {
		r.readErr = err.Error()
		return r
	}
	r.raw = v
	return r
}

// check says why the value cannot be used, naming it name (nil: usable).
func (r resolved) check(name string) error {
	switch {
	case r.readErr != "":
		return fmt.Errorf("%s: %s", name, r.readErr)
	case r.strong:
		return secret.Check(name, r.raw)
	}
	return nil
}

func (r resolved) value() string {
	if r.check("") != nil {
		return ""
	}
	return r.raw
}

// NewSecret resolves ref (the value, env:NAME or file:/path) now. An
// unresolvable or weak one is reported by Check.
func NewSecret(ref string) Secret { return Secret{resolve(ref, true)} }

// NewCredential is NewSecret without the strength rule.
func NewCredential(ref string) Credential { return Credential{resolve(ref, false)} }

// IsSet reports whether anything was configured.
func (s Secret) IsSet() bool { return s.v.ref != "" }

// Check reports, naming the key, why the secret cannot be used: unset,
// unresolvable, short or a placeholder.
func (s Secret) Check(name string) error {
	if !s.IsSet() {
		return secret.Check(name, "")
	}
	return s.v.check(name)
}

// Value is the resolved secret ("" when Check fails).
func (s Secret) Value() string { return s.v.value() }

// Ref is the reference as configured when it names a source (env:NAME,
// file:/path), else "" (a literal value is never handed out this way).
func (s Secret) Ref() string { return s.v.sourceRef() }

// Equal reports whether both resolve to the same value, in constant time.
func (s Secret) Equal(o Secret) bool {
	a, b := s.Value(), o.Value()
	return a != "" && subtle.ConstantTimeCompare([]byte(a), []byte(b)) == 1
}

// IsSet reports whether anything was configured.
func (c Credential) IsSet() bool { return c.v.ref != "" }

// Check reports, naming the key, why a configured credential cannot be
// read; an unset one is fine (empty stays empty).
func (c Credential) Check(name string) error { return c.v.check(name) }

// Value is the resolved credential ("" when unset or unreadable).
func (c Credential) Value() string { return c.v.value() }

func (r resolved) sourceRef() string {
	if strings.HasPrefix(r.ref, "env:") || strings.HasPrefix(r.ref, "file:") {
		return r.ref
	}
	return ""
}

func (r resolved) show() string {
	if r.ref == "" {
		return ""
	}
	if ref := r.sourceRef(); ref != "" {
		return ref
	}
	return redacted
}

// String, GoString, Format, MarshalJSON and MarshalYAML show the source
// (env:NAME, file:/path) or [redacted], never the value.
func (s Secret) String() string                { return s.v.show() }
func (s Secret) GoString() string              { return "config.Secret(" + s.v.show() + ")" }
func (s Secret) Format(f fmt.State, verb rune) { format(f, verb, s.v) }
func (s Secret) MarshalJSON() ([]byte, error)  { return json.Marshal(s.v.show()) }
func (s Secret) MarshalYAML() (any, error)     { return s.v.show(), nil }

func (c Credential) String() string                { return c.v.show() }
func (c Credential) GoString() string              { return "config.Credential(" + c.v.show() + ")" }
func (c Credential) Format(f fmt.State, verb rune) { format(f, verb, c.v) }
func (c Credential) MarshalJSON() ([]byte, error)  { return json.Marshal(c.v.show()) }
func (c Credential) MarshalYAML() (any, error)     { return c.v.show(), nil }

func format(f fmt.State, verb rune, r resolved) {
	if verb == 'q' {
		_, _ = fmt.Fprintf(f, "%q", r.show())
		return
	}
	_, _ = io.WriteString(f, r.show())
}

// UnmarshalYAML resolves the value as it is decoded; an unresolvable or
// weak secret fails the decode, naming its line (config.Decode adds the
// key).
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	ref, err := scalar(n)
	if err != nil {
		return err
	}
	*s = NewSecret(ref)
	if s.IsSet() && s.v.check("") != nil {
		return &secretError{line: n.Line, r: s.v}
	}
	return nil
}

// UnmarshalYAML resolves the credential as it is decoded.
func (c *Credential) UnmarshalYAML(n *yaml.Node) error {
	ref, err := scalar(n)
	if err != nil {
		return err
	}
	*c = NewCredential(ref)
	if c.v.check("") != nil {
		return &secretError{line: n.Line, r: c.v}
	}
	return nil
}

// UnmarshalJSON reads a reference from a JSON string, as UnmarshalYAML
// does (a config handed to a child process as JSON: references survive,
// literal values print as [redacted] and do not).
func (s *Secret) UnmarshalJSON(b []byte) error {
	var ref string
	if err := json.Unmarshal(b, &ref); err != nil {
		return fmt.Errorf("secret: want a string: %w", err)
	}
	*s = NewSecret(ref)
	return nil
}

// UnmarshalJSON reads a reference from a JSON string.
func (c *Credential) UnmarshalJSON(b []byte) error {
	var ref string
	if err := json.Unmarshal(b, &ref); err != nil {
		return fmt.Errorf("credential: want a string: %w", err)
	}
	*c = NewCredential(ref)
	return nil
}

func scalar(n *yaml.Node) (string, error) {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!str" && n.Tag != "!!null" && n.Tag != "!!int" && n.Tag != "!!float" && n.Tag != "!!bool") {
		return "", &secretError{line: n.Line, r: resolved{readErr: "want a string: the value, env:NAME or file:/path"}}
	}
	if n.Tag == "!!null" {
		return "", nil
	}
	return n.Value, nil
}

// secretError is a secret refused while decoding; Decode names its key.
type secretError struct {
	line int
	r    resolved
}

func (e *secretError) named(key string) error {
	return fmt.Errorf("line %d: %w", e.line, e.r.check(key))
}

func (e *secretError) Error() string { return e.named("the value").Error() }

// Tokens is a list of bearer tokens (each a Secret): the current one and
// those still accepted while rotating. Empty means none is configured.
type Tokens []Secret

// NewTokens resolves each ref (see NewSecret).
func NewTokens(refs ...string) Tokens {
	out := make(Tokens, 0, len(refs))
	for _, r := range refs {
		out = append(out, NewSecret(r))
	}
	return out
}

// Check reports the first unusable token, naming it name[i].
func (t Tokens) Check(name string) error {
	for i, s := range t {
		if err := s.Check(fmt.Sprintf("%s[%d]", name, i)); err != nil {
			return err
		}
	}
	return nil
}

// Match reports whether got is one of the tokens, comparing every one in
// constant time. An empty got or list never matches.
func (t Tokens) Match(got string) bool {
	ok := 0
	for _, s := range t {
		if v := s.Value(); v != "" {
			ok |= subtle.ConstantTimeCompare([]byte(got), []byte(v))
		}
	}
	return got != "" && ok == 1
}

// Values are the resolved tokens, for handing to code that signs or
// compares with them (never for printing).
func (t Tokens) Values() []string {
	out := make([]string, 0, len(t))
	for _, s := range t {
		out = append(out, s.Value())
	}
	return out
}
