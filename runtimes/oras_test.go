package runtimes

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// An OCI artifact of several blobs (model weights in small), pushed with
// ORAS to the registry and pulled with ORAS through the agents, which it
// takes for registries: cold through agent 0 (from the registry), through
// agent 1 (its bytes from agent 0), and warm through agent 0 (its cache).
// The files must come out as they went in; the big run is bench/lazy's.
func TestORAS(t *testing.T) {
	oras := testenv.ToolBinary(t, "ORAS_BIN")
	c := startCluster(t)
	src := t.TempDir()
	sizes := map[string]int64{"weights-0.bin": 3 << 20, "weights-1.bin": 2<<20 + 12345, "tokenizer.json": 4096}
	want := map[string][]byte{}
	var blobs []string
	var total int64
	for name, n := range sizes {
		b := make([]byte, n)
		rand.Read(b)
		want[name] = b
		total += n
		sum := sha256.Sum256(b)
		blobs = append(blobs, fmt.Sprintf("sha256:%x", sum))
		if err := os.WriteFile(filepath.Join(src, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run := func(dir string, args ...string) string {
		t.Helper()
		cmd := exec.Command(oras, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir()) // no credentials of the machine's
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("oras %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	ref := "lib/model:v1"
	run(src, "push", "--plain-http", "--artifact-type", "application/vnd.example.model.v1",
		c.reg+"/"+ref, "weights-0.bin", "weights-1.bin", "tokenizer.json")

	// pull pulls through agent and returns the change in its metrics once
	// it counted every byte (a client may see the last byte a moment
	// before the agent counts it).
	pull := func(agent string) (metrics, time.Duration) {
		t.Helper()
		before := scrape(t, agent)
		dir := t.TempDir()
		start := time.Now()
		run(dir, "pull", "--plain-http", agent+"/"+ref)
		took := time.Since(start)
		for name, b := range want {
			got, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil || !bytes.Equal(got, b) {
				t.Fatalf("pull through %s: %s differs from what was pushed (%v)", agent, name, err)
			}
		}
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			d := scrape(t, agent).sub(before)
			if d[bytesPeers]+d[bytesRegistry]+d[bytesCache] >= float64(total) || time.Now().After(deadline) {
				return d, took
			}
		}
	}
	cold, tc := pull(c.agents[0])
	if cold[downloads] < float64(len(blobs)) {
		t.Errorf("cold pull through agent 0: %v downloads, want %d", cold[downloads], len(blobs))
	}
	peer, tp := pull(c.agents[1])
	if peer[bytesPeers] < float64(total)*0.9 {
		t.Errorf("pull through agent 1: %v bytes from the other node, %v from the registry; want most of %d from the node", peer[bytesPeers], peer[bytesRegistry], total)
	}
	warm, tw := pull(c.agents[0])
	if warm[downloads] != 0 || warm[bytesCache] < float64(total) {
		t.Errorf("warm pull through agent 0: %v downloads, %v cache bytes; want none and %d", warm[downloads], warm[bytesCache], total)
	}
	t.Logf("ORAS pull of %d bytes in %d blobs: cold %s, from a peer %s, warm %s", total, len(blobs), tc, tp, tw)
}
