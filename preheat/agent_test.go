package preheat

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

type realAgent struct {
	id, group, mirror, control, cacheDir string
}

// startRealAgent runs `shoal agent` (P2P off: this test is about preheat
// dispatch, the swarm has its own tests) heartbeating to the preheat API.
// testClusterSecret is the join secret of the agents (and, where a test
// runs one, the preheat service) of this package's tests.
var testClusterSecret = secret.Generate()

func startRealAgent(t *testing.T, bin, id, group, registry, preheatURL string) *realAgent {
	t.Helper()
	dir := t.TempDir()
	a := &realAgent{id: id, group: group, mirror: testenv.FreeAddr(t), control: testenv.FreeAddr(t), cacheDir: filepath.Join(dir, "cache")}
	cfg := fmt.Sprintf(`node:
  id: %s
  groups: [%s]
cluster:
  secret: %s
mirror:
  addr: %s
control:
  addr: %s
upstreams:
  - url: %s
    default: true
cache:
  dir: %s
p2p:
  enabled: false
preheat:
  url: %s
  interval: 200ms
log:
  level: warn
`, id, group, testClusterSecret, a.mirror, a.control, registry, a.cacheDir, preheatURL)
	path := filepath.Join(dir, "agent.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "agent-"+id, bin, []string{"agent", "--config", path})
	// The control listener is members-only TLS; the mirror says when the
	// agent is up.
	testenv.WaitHTTP(t, p, "http://"+a.mirror+"/healthz", 30*time.Second)
	return a
}

func (a *realAgent) has(digest string) bool {
	_, err := os.Stat(filepath.Join(a.cacheDir, "blobs", strings.TrimPrefix(digest, "sha256:")))
	return err == nil
}

// Job lifecycle with three real `shoal agent` processes in two groups:
// only the targeted group's caches get the blobs, and a later pull through
// those agents' mirrors costs the registry zero blob bytes.
func TestRealAgentsLifecycle(t *testing.T) {
	if testing.Short() {
		t.Skip("starts shoal agent processes")
	}
	bin := testenv.ShoalBinary(t)
	rs := testenv.StartRedis(t)
	reg := startRegistry(t)
	img := reg.push(t, "lib/real:v1", 256<<10, 3)
	blobs := blobDigests(t, img)

	cfg := testConfig(reg.URL)
	r := startReplica(t, cfg, redisStore(t, rs.Addr))
	agents := []*realAgent{
		startRealAgent(t, bin, "a1", "zone-a", reg.URL, r.URL),
		startRealAgent(t, bin, "a2", "zone-a", reg.URL, r.URL),
		startRealAgent(t, bin, "b1", "zone-b", reg.URL, r.URL),
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var gs struct{ Groups []GroupView }
		call(t, "GET", r.URL+"/api/v1/groups", nil, nil, &gs)
		if len(gs.Groups) == 2 && gs.Groups[0].Alive == 2 && gs.Groups[1].Alive == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents did not register: %+v", gs.Groups)
		}
		time.Sleep(100 * time.Millisecond)
	}

	var j JobView
	if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/real:v1", Groups: []string{"zone-a"}}, &j); code != 201 {
		t.Fatalf("create %d", code)
	}
	v := waitJob(t, r.URL, j.ID, StateSuccess, 30*time.Second)
	if len(v.Progress) != 2*len(blobs) {
		t.Fatalf("progress entries %d, want %d", len(v.Progress), 2*len(blobs))
	}
	for _, p := range v.Progress {
		if p.State != StateSuccess || p.NodeID == "b1" {
			t.Fatalf("progress %+v", p)
		}
	}
	for _, a := range agents {
		for _, d := range blobs {
			if a.has(d) != (a.group == "zone-a") {
				t.Fatalf("agent %s (%s) has %s = %v", a.id, a.group, d, a.has(d))
			}
		}
	}

	egress := reg.blobBytes.Load()
	for _, a := range agents[:2] {
		for _, d := range blobs {
			resp, err := http.Get("http://" + a.mirror + "/v2/lib/real/blobs/" + d)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n == 0 {
				t.Fatalf("pull %s from %s: %s (%d bytes)", d, a.id, resp.Status, n)
			}
		}
	}
	if d := reg.blobBytes.Load() - egress; d != 0 {
		t.Fatalf("registry blob egress for pulls after preheat = %d bytes, want 0", d)
	}
}
