package tracker

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	anatracker "github.com/anacrolix/torrent/tracker"

	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/internal/token"
)

// TestTwoProcessesShareRedis runs two `shoal tracker` processes on one
// Redis: a peer announced to A is handed out by B, and a stop sent to B
// removes it for A.
func TestTwoProcessesShareRedis(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	r := testenv.StartRedis(t)
	bin := testenv.ShoalBinary(t)
	start := func(name string) string {
		addr := testenv.FreeAddr(t)
		cfg := filepath.Join(t.TempDir(), name+".yml")
		body := fmt.Sprintf("addr: %s\nsecrets: [%s]\nallowUnsigned: true\nredis:\n  addrs: [%s]\n", addr, testSecret, r.Addr)
		if err := os.WriteFile(cfg, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		p := testenv.Start(t, "tracker-"+name, bin, []string{"tracker", "--config", cfg})
		testenv.WaitHTTP(t, p, "http://"+addr+"/healthz", 30*time.Second)
		return "http://" + addr
	}
	a, b := start("a"), start("b")
	keys, _ := token.NewKeys(testSecret)
	h := ih(42)
	tok := "/announce?token=" + keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))
	mustAnnounce(t, a+tok, req(h, 1, 0, anatracker.Started))
	resp := mustAnnounce(t, b+tok, req(h, 2, 10, anatracker.Started))
	if got := addrsOf(resp.Peers); len(got) != 1 || !got["127.0.0.1:6001"] {
		t.Fatalf("B handed out %v, want the peer announced on A", got)
	}
	if resp.Seeders != 1 || resp.Leechers != 1 {
		t.Fatalf("B counts: %+v", resp)
	}
	mustAnnounce(t, b+tok, req(h, 1, 0, anatracker.Stopped))
	resp = mustAnnounce(t, a+tok, req(h, 3, 10, anatracker.Started))
	if got := addrsOf(resp.Peers); got["127.0.0.1:6001"] || !got["127.0.0.1:6002"] {
		t.Fatalf("A after stop on B: %v", got)
	}
}
