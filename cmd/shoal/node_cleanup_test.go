package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// node-cleanup takes back what the agent's pod put on a node: the
// hosts.toml files of the registries it was given and the cache directory;
// --check (the readiness probe) fails until then and passes after; an
// operator's own hosts.toml for one of the registries stays.
func TestNodeCleanup(t *testing.T) {
	ctx := context.Background()
	root := t.TempDir()
	hosts := []string{"--host-root", root, "--certs-dir", "/etc/containerd/certs.d", "--check-config=false",
		"--registry", "registry.example.com:5000", "--registry", "docker.io=https://registry-1.docker.io"}
	if err := runContainerdHosts(ctx, hosts); err != nil {
		t.Fatal(err)
	}
	certs := filepath.Join(root, "etc/containerd/certs.d")
	own := filepath.Join(certs, "operator.example.com", "hosts.toml")
	os.MkdirAll(filepath.Dir(own), 0o755)
	if err := os.WriteFile(own, []byte("server = \"https://operator.example.com\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	cache := filepath.Join(root, "var/lib/shoal/agent")
	for _, d := range []string{"blobs", "partial", "torrents"} {
		if err := os.MkdirAll(filepath.Join(cache, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(cache, "blobs", "ab"), []byte("blob"), 0o600)
	args := []string{"--host-root", root, "--registry", "registry.example.com:5000", "--registry", "docker.io=https://registry-1.docker.io",
		"--registry", "operator.example.com", "--cache-dir", "/var/lib/shoal/agent"}

	err := runNodeCleanup(ctx, append(args, "--check"))
	if err == nil || !strings.Contains(err.Error(), "registry.example.com:5000/hosts.toml") || !strings.Contains(err.Error(), cache) {
		t.Fatalf("--check before cleaning: %v; want both hosts.toml and the cache named", err)
	}
	if err := runNodeCleanup(ctx, args); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{filepath.Join(certs, "registry.example.com:5000"), filepath.Join(certs, "docker.io"), cache} {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s left after node-cleanup: %v", p, err)
		}
	}
	if _, err := os.Stat(own); err != nil {
		t.Errorf("the operator's hosts.toml went too: %v", err)
	}
	if err := runNodeCleanup(ctx, append(args, "--check")); err != nil {
		t.Fatalf("--check after cleaning: %v", err)
	}
	// A second run (a restarted pod) finds nothing and is content.
	if err := runNodeCleanup(ctx, args); err != nil {
		t.Fatal(err)
	}
	// --hold keeps the pod's container running until it is stopped.
	hctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := runNodeCleanup(hctx, append(args, "--hold")); err != nil || time.Since(start) < 100*time.Millisecond {
		t.Fatalf("--hold returned %v after %s", err, time.Since(start))
	}
}

func TestNodeCleanupErrors(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{nil, "node-cleanup: nothing to clean"},
		{[]string{"--cache-dir", "/var"}, `--cache-dir "/var": want an absolute path at least two levels deep`},
		{[]string{"--cache-dir", "/"}, `--cache-dir "/"`},
		{[]string{"--cache-dir", "var/lib/shoal"}, `--cache-dir "var/lib/shoal"`},
		{[]string{"--registry", "bad host"}, `node-cleanup: registry "bad host"`},
		{[]string{"--registry", "docker.io", "extra"}, `node-cleanup: unexpected argument "extra"`},
	} {
		if err := runNodeCleanup(context.Background(), tc.args); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.args, err, tc.want)
		}
	}
	if err := runNodeCleanupWait(context.Background(), nil); err == nil || !strings.Contains(err.Error(), "--daemonset is required") {
		t.Errorf("node-cleanup-wait without --daemonset: %v", err)
	}
}

// The wait is over when the DaemonSet controller has seen the current
// generation and every node's pod is of it and Ready (Ready meaning: the
// readiness probe found the node clean).
func TestNodeCleanupWaitDecision(t *testing.T) {
	ds := func(gen, observed int64, desired, updated, ready int32) daemonSetStatus {
		var d daemonSetStatus
		d.Metadata.Generation = gen
		d.Status.ObservedGeneration = observed
		d.Status.DesiredNumberScheduled = desired
		d.Status.UpdatedNumberScheduled = updated
		d.Status.NumberReady = ready
		return d
	}
	for _, tc := range []struct {
		name string
		d    daemonSetStatus
		done bool
		msg  string
	}{
		{"just created: zeros mean nothing yet", ds(1, 0, 0, 0, 0), false, "waiting for the DaemonSet controller"},
		{"pods scheduled, none ready", ds(1, 1, 3, 3, 0), false, "0 of 3 nodes clean"},
		{"some ready", ds(1, 1, 3, 3, 2), false, "2 of 3 nodes clean"},
		{"ready but not all of this generation", ds(2, 2, 3, 2, 3), false, "2 of 3 nodes clean"},
		{"every node clean", ds(1, 1, 3, 3, 3), true, "all 3 nodes clean"},
		{"no node to clean", ds(1, 1, 0, 0, 0), true, "all 0 nodes clean"},
	} {
		done, msg := tc.d.cleaned()
		if done != tc.done || !strings.Contains(msg, tc.msg) {
			t.Errorf("%s: cleaned() = %v, %q; want %v, %q", tc.name, done, msg, tc.done, tc.msg)
		}
	}
}
