package k8s

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestNodeRuntime checks the node half of the harness without Kubernetes:
// a node namespace's containerd 2 (its own mount namespace, /etc/containerd
// bound to the node's directory) runs a pod sandbox with Kubernetes's pause
// built from source, pulled from the bootstrap registry through the node's
// certs.d, gets an address from the CNI bridge in the node's pod range, and
// runs a container whose output the CRI returns. make k8s-test runs it
// first: when it fails, the cluster test cannot pass.
func TestNodeRuntime(t *testing.T) {
	tl := findRuntimeTools(t)
	modDir := k8sModDir(t)
	ctx := context.Background()
	c := &cluster{t: t, tl: tl, dir: mkdir(t, testTempDir(t)), runtimeOnly: true}
	c.net = newNetwork(t, 1)
	c.pki = newPKI(t, mkdir(t, c.dir, "pki"))
	c.pki.issue(t, "kubelet-k8s-n1", "system:node:k8s-n1", []string{"system:nodes"}, nil, nil)
	c.startBootstrapRegistry(ctx)
	boot := fmt.Sprintf("%s:%d", cpIP, bootstrapPort)
	push(t, c.net.cp, boot+"/pause:3.10", pauseImage(t, modDir, c.dir))
	push(t, c.net.cp, boot+"/busybox:test", image(t, []string{"/bin/sh"}, "", busyboxLayer(t)))
	c.startNodes(boot + "/pause:3.10")
	n := c.nodes[0]
	cfg := writeFile(t, n.dir, "crictl.yaml", fmt.Sprintf("runtime-endpoint: unix://%s\nimage-endpoint: unix://%s\ntimeout: 60\n", n.sock, n.sock))
	crictl := func(args ...string) string {
		t.Helper()
		full := append([]string{tl.crictl, "--config", cfg}, args...)
		var out string
		var err error
		testenv_wait(t, 30*time.Second, func() error {
			out, err = c.nodeExec(ctx, n, full...)
			if err != nil && strings.Contains(err.Error(), "connect") {
				return err // containerd still starting
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.TrimSpace(out)
	}
	// The node's own /etc/containerd, not the host's.
	if out, err := c.nodeExec(ctx, n, "cat", "/etc/containerd/config.toml"); err != nil || !strings.Contains(out, n.sock) {
		t.Fatalf("the node does not see its own containerd config: %v\n%s", err, out)
	}
	pod := writeFile(t, n.dir, "pod.json", fmt.Sprintf(`{"metadata": {"name": "rt", "namespace": "default", "uid": "rt-1"},
 "log_directory": "/var/log/pods/rt", "linux": {"cgroup_parent": %q}}`, n.cgroup+"/rt"))
	ctr := writeFile(t, n.dir, "ctr.json", fmt.Sprintf(`{"metadata": {"name": "c"}, "image": {"image": %q},
 "command": ["/bin/sh", "-c", "echo hello from $(cat /proc/1/cgroup | grep -c rt) node"], "log_path": "c.log"}`, boot+"/busybox:test"))
	crictl("pull", boot+"/busybox:test")
	podID := crictl("runp", pod)
	ip := crictl("inspectp", "--output", "go-template", "--template", "{{.status.network.ip}}", podID)
	if !strings.HasPrefix(ip, "10.244.1.") {
		t.Fatalf("pod IP %q, want one of the node's range %s", ip, podCIDR(0))
	}
	cid := crictl("create", podID, ctr, pod)
	crictl("start", cid)
	testenv_wait(t, 30*time.Second, func() error {
		if s := crictl("inspect", "--output", "go-template", "--template", "{{.status.state}}", cid); s != "CONTAINER_EXITED" {
			return fmt.Errorf("container %s", s)
		}
		return nil
	})
	logs, err := os.ReadFile(filepath.Join(n.hostDirs["/var/log/pods"], "rt", "c.log"))
	if err != nil || !strings.Contains(string(logs), "hello from") {
		t.Fatalf("container log %q: %v", logs, err)
	}
	t.Logf("pod %s at %s ran a container: %s", podID[:12], ip, strings.TrimSpace(string(logs)))
	crictl("stopp", podID)
	crictl("rmp", podID)
}

func testenv_wait(t *testing.T, timeout time.Duration, ready func() error) {
	t.Helper()
	waitFor(t, nil, "the node's runtime", timeout, ready)
}
