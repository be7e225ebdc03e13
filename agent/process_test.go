package agent

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// `shoal agent --config FILE` as a real process: it serves a pull, is killed
// (as a crash would), and the restarted process serves the blob from its
// cache without downloading it again.
func TestAgentProcessCrashKeepsCache(t *testing.T) {
	bin := testenv.ShoalBinary(t)
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/proc", 2<<20, 1)
	d := layerDigests(t, img)[0]
	proxy := startCountingProxy(t, reg)
	dir := t.TempDir()
	mirror := testenv.FreeAddr(t)
	cfg := fmt.Sprintf(`node: {id: proc-node}
cluster: {secret: %s}
mirror: {addr: %s}
control: {addr: %s}
upstreams:
  - url: http://%s
cache: {dir: %s, maxBytes: 1073741824}
p2p: {addr: "127.0.0.1:0"}
log: {level: info}
`, testClusterSecret, mirror, testenv.FreeAddr(t), proxy.addr, filepath.Join(dir, "cache"))
	path := filepath.Join(dir, "agent.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "shoal-agent", bin, []string{"agent", "--config", path})
	testenv.WaitHTTP(t, p, "http://"+mirror+"/healthz", 30*time.Second)
	if st, sum, _ := getBlob(t, mirror, "lib/proc", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("first pull: %d %s", st, sum)
	}
	// The client has every byte before the commit's fsync and rename end:
	// a download counts in the duration histogram once it is committed.
	for deadline := time.Now().Add(30 * time.Second); metric(t, mirror, `shoal_agent_blob_download_duration_seconds_count{source="http"}`) < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("first pull never committed to the cache")
		}
	}
	p.Kill()
	p2 := testenv.Start(t, "shoal-agent-2", bin, []string{"agent", "--config", path})
	testenv.WaitHTTP(t, p2, "http://"+mirror+"/healthz", 30*time.Second)
	if st, sum, _ := getBlob(t, mirror, "lib/proc", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("pull after crash: %d %s", st, sum)
	}
	if n := proxy.blobGets.Load(); n != 1 {
		t.Errorf("upstream blob GETs = %d, want 1 (second pull from the cache)", n)
	}
	if v := metric(t, mirror, "shoal_agent_cache_hits_total"); v != 1 {
		t.Errorf("cache hits after restart = %v, want 1", v)
	}
}
