package agent

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The p2p listener keys were renamed to *.addr; files with the old names
// keep working and say so once.
func TestConfigMovedListenerKeys(t *testing.T) {
	dir := t.TempDir()
	load := func(body string) Config {
		t.Helper()
		p := filepath.Join(dir, "agent.yml")
		if err := os.WriteFile(p, []byte("cluster: {secret: 7f3a9c2e51d84b06a1e5c9d2f04b8e63a7c1d5e9f2b4a6c8}\n"+body), 0o600); err != nil {
			t.Fatal(err)
		}
		c, err := LoadConfig(p)
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	old := load("p2p:\n  listen: 0.0.0.0:6881\n  dataListen: 0.0.0.0:6882\n")
	if old.P2P.Listen != "0.0.0.0:6881" || old.P2P.DataListen != "0.0.0.0:6882" {
		t.Fatalf("old keys not read: %+v", old.P2P)
	}
	if w := old.Deprecated(); !strings.Contains(w, "p2p.listen is now p2p.addr") || !strings.Contains(w, "p2p.dataListen is now p2p.dataAddr") {
		t.Fatalf("warning %q", w)
	}
	cur := load("p2p:\n  addr: 0.0.0.0:6881\n  dataAddr: 0.0.0.0:6882\n")
	if cur.P2P.Listen != "0.0.0.0:6881" || cur.P2P.DataListen != "0.0.0.0:6882" || cur.Deprecated() != "" {
		t.Fatalf("new keys: %+v, warning %q", cur.P2P, cur.Deprecated())
	}
}
