// Package config is the one way Shoal's own configuration files are read:
// the tracker's, the agent's and preheat's (the registry keeps
// distribution's config.yml, whose rules are upstream's).
//
// The convention, the same for every component:
//   - YAML through go.yaml.in/yaml/v3, keys in lowerCamelCase;
//   - the file is decoded over the component's DefaultConfig, so every key
//     is optional unless its Validate says otherwise, and an empty file means
//     the defaults;
//   - unknown keys are errors naming the key and its line, so a typo never
//     silently falls back to a default;
//   - keys that were renamed or removed are errors naming what replaced
//     them (Renamed), so an old file fails loudly instead of half-working;
//   - Validate is pure: it reports the first unusable setting and changes
//     nothing. Derived values are computed by the component, not written
//     back into its config;
//   - the blocks every component has are spelled once, here: Log, Debug and
//     Redis.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Default listen addresses, the single-host ports every component and the
// all-in-one `shoal run` agree on.
const (
	RegistryAddr = "127.0.0.1:5000"
	TrackerAddr  = "127.0.0.1:6969"
	PreheatAddr  = "127.0.0.1:8002"
	MirrorAddr   = "127.0.0.1:65001"
	ControlAddr  = "127.0.0.1:65002"
)

// maxFileBytes bounds a configuration file: a mistaken path (a log, a
// device) fails fast instead of filling memory.
const maxFileBytes = 1 << 20

// Renamed maps a key's old dotted path (e.g. "log_level", "redis.mastername")
// to the message that replaces it, usually the new key's path. A key inside a
// list is named without an index ("upstreams.user").
type Renamed map[string]string

// Load reads the file at path into dst, which must already hold the
// component's defaults. component names the file in errors ("tracker
// config").
func Load(component, path string, dst any, renamed Renamed) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("%s: %w", component, err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return fmt.Errorf("%s: read %s: %w", component, path, err)
	}
	if len(b) > maxFileBytes {
		return fmt.Errorf("%s: %s is larger than %d bytes; is it the right file?", component, path, maxFileBytes)
	}
	if err := Decode(b, dst, renamed); err != nil {
		return fmt.Errorf("%s %s: %w", component, path, err)
	}
	return nil
}

// Decode decodes YAML over dst (see Load).
func Decode(b []byte, dst any, renamed Renamed) error {
	var root yaml.Node
	if err := yaml.Unmarshal(b, &root); err != nil {
		return cleanErr(err)
	}
	if err := checkRenamed(&root, "", renamed); err != nil {
		return err
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(dst); err != nil && !errors.Is(err, io.EOF) {
		var se *secretError
		if errors.As(err, &se) {
			if key := keyAt(&root, "", se.line); key != "" {
				return se.named(key)
			}
			return se
		}
		return cleanErr(err)
	}
	return nil
}

// keyAt is the dotted path ("harbor.tokens[0]") of the scalar value on
// line, so a refused secret is named the way the documentation does.
func keyAt(n *yaml.Node, prefix string, line int) string {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			if k := keyAt(c, prefix, line); k != "" {
				return k
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if k := keyAt(c, fmt.Sprintf("%s[%d]", prefix, i), line); k != "" {
				return k
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			path := n.Content[i].Value
			if prefix != "" {
				path = prefix + "." + path
			}
			if k := keyAt(n.Content[i+1], path, line); k != "" {
				return k
			}
		}
	case yaml.ScalarNode:
		if n.Line == line {
			return prefix
		}
	}
	return ""
}

func checkRenamed(n *yaml.Node, prefix string, renamed Renamed) error {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			if err := checkRenamed(c, prefix, renamed); err != nil {
				return err
			}
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			path := k.Value
			if prefix != "" {
				path = prefix + "." + k.Value
			}
			if msg, ok := renamed[path]; ok {
				return fmt.Errorf("line %d: key %q is no longer read: %s", k.Line, path, msg)
			}
			if err := checkRenamed(n.Content[i+1], path, renamed); err != nil {
				return err
			}
		}
	}
	return nil
}

var unknownField = regexp.MustCompile(`field (\S+) not found in type \S+`)

// cleanErr turns yaml.v3's messages into ones that name the key the way
// the documentation does.
func cleanErr(err error) error {
	msg := strings.TrimPrefix(err.Error(), "yaml: ")
	msg = strings.ReplaceAll(msg, "unmarshal errors:\n  ", "")
	msg = unknownField.ReplaceAllString(msg, `unknown key "$1" (misspelt, or not a key of this block?)`)
	return errors.New(msg)
}
