package main

import (
	"encoding/xml"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// notComponents are the subcommands that are not a component of their own:
// they run inside one (init containers) or run all of them. A new subcommand
// that is a component must appear in the architecture picture, the README's
// component table and docs/architecture.md, or be listed here with a reason.
var notComponents = map[string]string{
	"version":           "prints the version",
	"run":               "starts every component in one process",
	"containerd-hosts":  "the agent's init container",
	"config-render":     "every pod's init container",
	"node-cleanup":      "the chart's uninstall hook on every node",
	"node-cleanup-wait": "the chart's uninstall hook that waits for it",
}

// TestArchitectureDiagram keeps the map current: the picture is drawn by
// hand, so nothing else notices when a component is added and not drawn.
func TestArchitectureDiagram(t *testing.T) {
	svgText := svgTexts(t, filepath.Join("..", "..", "docs", "architecture.svg"))
	readme := readDoc(t, filepath.Join("..", "..", "README.md"))
	arch := readDoc(t, filepath.Join("..", "..", "docs", "architecture.md"))
	for name := range commands {
		if _, skip := notComponents[name]; skip {
			continue
		}
		if !strings.Contains(svgText, "shoal "+name) {
			t.Errorf("docs/architecture.svg has no box for %q (a text reading \"shoal %s\")", name, name)
		}
		if !strings.Contains(readme, "`shoal "+name) {
			t.Errorf("README.md's component table has no row for `shoal %s`", name)
		}
		if !strings.Contains(arch, "## "+name) && !strings.Contains(arch, "**"+name+"**") {
			t.Errorf("docs/architecture.md does not describe %q", name)
		}
	}
	for name := range notComponents {
		if _, ok := commands[name]; !ok {
			t.Errorf("notComponents lists %q, which is no longer a subcommand", name)
		}
	}
}

// TestReadmeIsAMap holds the README to its job: what Shoal is, the two
// commands, the picture and where to read next. Details live in docs/ and
// beside the code.
func TestReadmeIsAMap(t *testing.T) {
	readme := readDoc(t, filepath.Join("..", "..", "README.md"))
	if n := strings.Count(readme, "\n"); n > 250 {
		t.Errorf("README.md has %d lines; keep it under 250 and move details to docs/", n)
	}
	for _, want := range []string{"docs/architecture.svg", "shoal run", "make test"} {
		if !strings.Contains(readme, want) {
			t.Errorf("README.md does not mention %q", want)
		}
	}
	// Every document the README points to must exist.
	for _, line := range strings.Split(readme, "\n") {
		for _, field := range strings.FieldsFunc(line, func(r rune) bool { return strings.ContainsRune("()[]` ,", r) }) {
			if !strings.HasPrefix(field, "docs/") && !strings.HasSuffix(field, "/README.md") {
				continue
			}
			field = strings.TrimRight(field, ".:;")
			path := strings.SplitN(field, "#", 2)[0]
			if _, err := os.Stat(filepath.Join("..", "..", path)); err != nil {
				t.Errorf("README.md points to %s: %v", path, err)
			}
		}
	}
}

func svgTexts(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	d := xml.NewDecoder(f)
	inText := false
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		switch tok := tok.(type) {
		case xml.StartElement:
			inText = tok.Name.Local == "text"
		case xml.EndElement:
			inText = false
		case xml.CharData:
			if inText {
				b.Write(tok)
				b.WriteByte('\n')
			}
		}
	}
	return b.String()
}

func readDoc(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
