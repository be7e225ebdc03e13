package config

import (
	"bytes"
	"fmt"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"
)

// keyEdit renames one key in place.
type keyEdit struct {
	line, col int // of the key, 1-based, as yaml.v3 reports them
	old, new  string
}

// applyMoved rewrites each moved key of the file to its new name where it
// stands, so the decoder reads it as the new key and every line number in
// an error still matches the file.
func applyMoved(b []byte, root *yaml.Node, moved Moved) ([]byte, []string, error) {
	if len(moved) == 0 {
		return b, nil, nil
	}
	var edits []keyEdit
	var used []string
	var walk func(n *yaml.Node, prefix string) error
	walk = func(n *yaml.Node, prefix string) error {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				if err := walk(c, prefix); err != nil {
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
				if to, ok := moved[path]; ok {
					for j := 0; j+1 < len(n.Content); j += 2 {
						if n.Content[j].Value == to {
							return fmt.Errorf("line %d: key %q is the old name of %q, which is set too (line %d): keep %q", k.Line, path, to, n.Content[j].Line, to)
						}
					}
					newPath := to
					if prefix != "" {
						newPath = prefix + "." + to
					}
					edits = append(edits, keyEdit{line: k.Line, col: k.Column, old: k.Value, new: to})
					used = append(used, path+" is now "+newPath)
				}
				if err := walk(n.Content[i+1], path); err != nil {
					return err
				}
			}
		}
		return nil
	}
	if err := walk(root, ""); err != nil {
		return nil, nil, err
	}
	if len(edits) == 0 {
		return b, nil, nil
	}
	out, err := renameKeys(b, edits)
	if err != nil {
		return nil, nil, err
	}
	sort.Strings(used)
	return out, used, nil
}

// renameKeys applies edits to the lines of b. A key is plain or quoted;
// anything else at the reported position (a key yaml.v3 placed where this
// cannot find it) is refused rather than guessed at.
func renameKeys(b []byte, edits []keyEdit) ([]byte, error) {
	// Right to left within a line, so an edit does not move the next.
	sort.Slice(edits, func(i, j int) bool {
		if edits[i].line != edits[j].line {
			return edits[i].line < edits[j].line
		}
		return edits[i].col > edits[j].col
	})
	lines := bytes.SplitAfter(b, []byte("\n"))
	for _, e := range edits {
		if e.line < 1 || e.line > len(lines) {
			return nil, fmt.Errorf("line %d: cannot read key %q under its new name %q: rename it in the file", e.line, e.old, e.new)
		}
		l := lines[e.line-1]
		at := e.col - 1
		if at >= 0 && at < len(l) && (l[at] == '"' || l[at] == '\'') {
			at++ // a quoted key: the name starts after the quote
		}
		if at < 0 || !bytes.HasPrefix(l[at:], []byte(e.old)) || strings.ContainsRune(e.old, '\n') {
			return nil, fmt.Errorf("line %d: cannot read key %q under its new name %q: rename it in the file", e.line, e.old, e.new)
		}
		lines[e.line-1] = append(append(append([]byte{}, l[:at]...), e.new...), l[at+len(e.old):]...)
	}
	return bytes.Join(lines, nil), nil
}
