package preheat

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

func startPreheatProcess(t *testing.T, bin, name, redisAddr, registry string) (*testenv.Process, string) {
	t.Helper()
	addr := testenv.FreeAddr(t)
	cfg := fmt.Sprintf("addr: %s\ncluster: {secret: %s}\nredis:\n  addrs: [%q]\nregistry: %s\nleaseTTL: 1s\nheartbeatTTL: 30s\nfetchTimeout: 20s\n", addr, testClusterSecret, redisAddr, registry)
	path := filepath.Join(t.TempDir(), "preheat.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, name, bin, []string{"preheat", "--config", path})
	testenv.WaitHTTP(t, p, "http://"+addr+"/healthz", 20*time.Second)
	return p, "http://" + addr
}

func cli(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, append([]string{"preheat"}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("shoal preheat %v: %v\n%s", args, err, out)
	}
	return string(out)
}

// The preheat process is SIGKILLed mid-job (its lease is not released); a
// second process on the same Redis takes the job over after the lease TTL
// and completes it. Driven through the CLI.
func TestProcessCrashMidJobResumes(t *testing.T) {
	if testing.Short() {
		t.Skip("starts shoal processes")
	}
	bin := testenv.ShoalBinary(t)
	rs := testenv.StartRedis(t)
	reg := startRegistry(t)
	img := reg.push(t, "lib/crash:v1", 8<<10, 3)
	want := blobDigests(t, img)

	p1, api1 := startPreheatProcess(t, bin, "preheat-1", rs.Addr, reg.URL)
	a := startAgent(t, "n1", "zone-a")
	a.gate = make(chan struct{})
	a.started = make(chan string, 100)
	heartbeat(t, api1, a.ID, a.URL(), "zone-a")

	out := cli(t, bin, "create", reg.Host+"/lib/crash:v1", "--group", "zone-a", "--api", api1)
	var id int64
	if _, err := fmt.Sscanf(out, "job %d", &id); err != nil {
		t.Fatalf("create output %q: %v", out, err)
	}
	<-a.started
	a.gate <- struct{}{}
	<-a.started // second blob in flight
	p1.Kill()

	_, api2 := startPreheatProcess(t, bin, "preheat-2", rs.Addr, reg.URL)
	close(a.gate)
	v := waitJob(t, api2, id, StateSuccess, 20*time.Second)
	if len(v.Progress) != len(want) || len(a.cached(t)) != len(want) {
		t.Fatalf("after takeover: progress %d, cached %d, want %d", len(v.Progress), len(a.cached(t)), len(want))
	}
	st := cli(t, bin, "status", fmt.Sprint(id), "--api", api2)
	if !strings.Contains(st, "SUCCESS") || !strings.Contains(st, "zone-a") || !strings.Contains(st, "100%") {
		t.Fatalf("status output:\n%s", st)
	}
	if w := cli(t, bin, "status", fmt.Sprint(id), "--watch", "--api", api2); !strings.Contains(w, "SUCCESS") {
		t.Fatalf("status --watch output:\n%s", w)
	}
	if l := cli(t, bin, "list", "--api", api2); !strings.Contains(l, "lib/crash:v1") {
		t.Fatalf("list output:\n%s", l)
	}
	if _, err := exec.Command(bin, "preheat", "cancel", fmt.Sprint(id), "--api", api2).CombinedOutput(); err == nil {
		t.Fatal("cancel of a finished job should fail")
	}
}

// A job that needed credentials cannot be resumed by a replica that never
// held them: it fails with an explicit error rather than fetching
// anonymously or hanging.
func TestResumeWithoutCredentialsFailsClearly(t *testing.T) {
	rs := testenv.StartRedis(t)
	reg := startRegistry(t)
	reg.push(t, "lib/cred:v1", 4<<10, 2)
	cfg := testConfig(reg.URL)
	r1 := startReplica(t, cfg, redisStore(t, rs.Addr))
	a := startAgent(t, "n1", "g")
	a.gate = make(chan struct{})
	a.started = make(chan string, 100)
	heartbeat(t, r1.URL, a.ID, a.URL(), "g")
	var j JobView
	call(t, "POST", r1.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/lib/cred:v1", Headers: map[string]string{"Authorization": "Bearer pull-jwt"}}, &j)
	<-a.started
	r1.stop()
	close(a.gate)
	r2 := startReplica(t, cfg, redisStore(t, rs.Addr))
	v := waitJob(t, r2.URL, j.ID, StateFailure, 10*time.Second)
	if !strings.Contains(v.Error, "resubmit") {
		t.Fatalf("error = %q", v.Error)
	}
}
