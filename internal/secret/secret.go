// Package secret is the one way Shoal's components read a secret from their
// configuration and the one rule for what a secret must look like.
//
// A configured value may be the secret itself, "env:NAME" (read from the
// environment variable NAME) or "file:/path" (read from a file; a trailing
// newline is dropped), so Kubernetes Secrets fit either as environment
// variables or as mounted files. Whatever the source, the result must be at
// least MinLen bytes and must not be one of the placeholders shipped in
// example configurations: a component refuses to start rather than run with
// a secret anyone can read in the documentation.
package secret

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strings"
)

// MinLen is the shortest secret accepted, in bytes. 32 bytes is the HMAC-
// SHA256 key size; `openssl rand -hex 32` (64 characters) is what the error
// message suggests.
const MinLen = 32

// maxLen bounds a secret read from a file, so a mistaken path (a log, a
// device) fails fast instead of filling memory.
const maxLen = 4096

// Resolve returns the secret the configured value names. name is the
// configuration key, used only in error messages; the value is never
// included in them.
func Resolve(name, value string) (string, error) {
	raw, err := read(name, value)
	if err != nil {
		return "", err
	}
	if err := Check(name, raw); err != nil {
		return "", err
	}
	return raw, nil
}

// ResolveAll resolves each value of a list (a current secret followed by the
// ones still accepted while rotating).
func ResolveAll(name string, values []string) ([]string, error) {
	out := make([]string, 0, len(values))
	for i, v := range values {
		s, err := Resolve(fmt.Sprintf("%s[%d]", name, i), v)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// ResolveRotating resolves a secret that rotates: the current one (name)
// and those still accepted while members move to it (previousName),
// current first.
func ResolveRotating(name, current, previousName string, previous []string) ([]string, error) {
	cur, err := Resolve(name, current)
	if err != nil {
		return nil, err
	}
	prev, err := ResolveAll(previousName, previous)
	if err != nil {
		return nil, err
	}
	return append([]string{cur}, prev...), nil
}

// Read returns the credential the configured value names, with the same
// env:/file: forms as Resolve but no strength rule: for credentials Shoal
// does not choose (a Redis password, a registry login), where refusing a
// short one would only stop the operator.
func Read(name, value string) (string, error) { return read(name, value) }

func read(name, value string) (string, error) {
	s, err := ReadRef(value)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return s, nil
}

// ReadRef is Read without a key name in its errors, for callers that add
// the name themselves (internal/config's Secret, which learns it later).
func ReadRef(value string) (string, error) {
	switch {
	case strings.HasPrefix(value, "env:"):
		v := strings.TrimPrefix(value, "env:")
		s, ok := os.LookupEnv(v)
		if !ok {
			return "", fmt.Errorf("environment variable %s is not set", v)
		}
		return s, nil
	case strings.HasPrefix(value, "file:"):
		p := strings.TrimPrefix(value, "file:")
		f, err := os.Open(p)
		if err != nil {
			return "", err
		}
		defer f.Close()
		b, err := io.ReadAll(io.LimitReader(f, maxLen+1))
		if err != nil {
			return "", err
		}
		if len(b) > maxLen {
			return "", fmt.Errorf("%s is longer than %d bytes; is it the right file?", p, maxLen)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return value, nil
}

// Check refuses secrets that protect nothing: empty, short, or placeholders.
func Check(name, s string) error {
	how := "generate one with `openssl rand -hex 32` and set it directly, as env:VAR or as file:/path"
	if s == "" {
		return fmt.Errorf("%s is not set; %s", name, how)
	}
	if placeholder(s) {
		return fmt.Errorf("%s is a placeholder from an example configuration; %s", name, how)
	}
	if len(s) < MinLen {
		return fmt.Errorf("%s is %d bytes, shorter than %d; %s", name, len(s), MinLen, how)
	}
	return nil
}

func placeholder(s string) bool {
	l := strings.ToLower(s)
	for _, p := range []string{"change-me", "changeme", "change_me", "replace-me", "example", "<secret>", "xxxxxxxx"} {
		if strings.Contains(l, p) {
			return true
		}
	}
	// One repeated character ("aaaa…", "0000…") is not a secret either.
	return strings.Count(s, s[:1]) == len(s)
}

// Generate returns a fresh random secret, for `shoal run` and tests.
func Generate() string {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		// crypto/rand does not fail on supported platforms (Go 1.24+
		// crashes the program instead); keep the signature simple.
		panic(err)
	}
	return hex.EncodeToString(b)
}
