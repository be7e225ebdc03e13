package agent

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// An agent killed (-9) mid-blob leaves its pieces on disk; restarted, it
// checks them against their SHA-1 and fetches only the rest.
func TestResumeAfterKill(t *testing.T) {
	trackerURL, _ := startShoalTracker(t, testTrackerSecret)
	reg := startShoalRegistrySecret(t, trackerURL, testTrackerSecret, 0, true)
	const size = 24 << 20
	img := pushRandom(t, reg, "lib/resume", size, 1)
	d := layerDigests(t, img)[0]
	bin := testenv.ShoalBinary(t)
	dir := t.TempDir()
	cache := filepath.Join(dir, "cache")
	mirror := testenv.FreeAddr(t)
	cfg := filepath.Join(dir, "agent.yml")
	os.WriteFile(cfg, fmt.Appendf(nil, `node: {id: resume}
cluster: {secret: %q}
mirror: {addr: %s}
control: {addr: %s}
upstreams:
  - {host: %q, url: "http://%s", default: true}
cache: {dir: %q, maxBytes: 1073741824}
p2p: {enabled: true, addr: "127.0.0.1:0", downloadBytesPerSec: 4194304}
log: {level: warn}
`, testClusterSecret, mirror, testenv.FreeAddr(t), reg, reg, cache), 0o600)
	start := func() *testenv.Process {
		p := testenv.Start(t, "shoal agent", bin, []string{"agent", "--config", cfg})
		testenv.WaitHTTP(t, p, "http://"+mirror+"/healthz", 30*time.Second)
		return p
	}
	p := start()
	go http.Get("http://" + mirror + "/v2/lib/resume/blobs/" + d.String()) // dies with the agent
	fetched := func() float64 {
		return metric(t, mirror, `shoal_agent_registry_piece_bytes_total{reason="alone"}`) + metric(t, mirror, `shoal_agent_registry_piece_bytes_total{reason="share"}`)
	}
	for deadline := time.Now().Add(30 * time.Second); fetched() < size/2; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the download never got half way")
		}
	}
	before := fetched()
	p.Kill()

	start()
	if st, sum, _ := getBlob(t, mirror, "lib/resume", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("after the restart: %d %s", st, sum)
	}
	resumed := metric(t, mirror, "shoal_agent_resumed_bytes_total")
	again := fetched()
	t.Logf("killed after %.0f MiB from the registry; restarted: %.0f MiB kept, %.0f MiB fetched", before/(1<<20), resumed/(1<<20), again/(1<<20))
	if resumed < before/2 {
		t.Errorf("the restarted agent kept %v bytes of the %v fetched before the kill", resumed, before)
	}
	if again > size-resumed+4<<20 {
		t.Errorf("the restarted agent fetched %v bytes again of %d, having kept %v", again, size, resumed)
	}
}
