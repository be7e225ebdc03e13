package k8s

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

const (
	release   = "shoal"
	namespace = "shoal"
	fullname  = "shoal-shoal"
	// registryHost is the name images in Shoal's registry carry (the
	// chart's default: the Service's cluster DNS name).
	registryHost = fullname + "-registry." + namespace + ".svc.cluster.local:5000"
	mirrorAddr   = "127.0.0.1:65001"
)

func k8sModDir(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	d := filepath.Join(strings.TrimSpace(string(out)), "k8s.io", "kubernetes@v1.34.12")
	if _, err := os.Stat(d); err != nil {
		t.Skipf("%s: %v (make k8s downloads it)", d, err)
	}
	return d
}

// TestShoalOnKubernetes installs the chart on a two-node cluster and checks
// what only a real cluster shows: agents on host networking, hosts.toml
// where each node's containerd reads it, pods' images pulled through the
// agents and between nodes, preheat through its Service, an image volume,
// upgrade with a rotated join secret, and uninstall.
func TestShoalOnKubernetes(t *testing.T) {
	tl := findTools(t)
	modDir := k8sModDir(t)
	start := time.Now()
	ctx := context.Background()
	c := &cluster{t: t, tl: tl, dir: mkdir(t, testTempDir(t))}
	c.start(2)
	t.Logf("control plane up after %s", time.Since(start).Round(time.Second))

	boot := fmt.Sprintf("%s:%d", cpIP, bootstrapPort)
	pause := boot + "/pause:3.10"
	push(t, c.net.cp, pause, pauseImage(t, modDir, c.dir))
	push(t, c.net.cp, boot+"/shoal:test", shoalImage(t, tl.shoal))
	push(t, c.net.cp, boot+"/busybox:test", image(t, []string{"/bin/sh"}, "", busyboxLayer(t)))
	c.startNodes(pause)
	t.Logf("nodes Ready after %s", time.Since(start).Round(time.Second))

	joinSecret := hexSecret()
	preheatToken := hexSecret()
	chart, _ := filepath.Abs("../deploy/helm/shoal")
	// As docs/kubernetes.md says: the image overridden, plus what this
	// cluster lacks (no storage provisioner, no image of Redis).
	install := []string{"install", release, chart, "-n", namespace, "--create-namespace",
		"--set", "image.repository=" + boot + "/shoal", "--set", "image.tag=test",
		"--set", "registry.storage.filesystem.persistence.enabled=false",
		"--set", "redis.bundled.enabled=false",
		"--set", "cluster.secret=" + joinSecret,
		"--set", "secrets.preheatAPIToken=" + preheatToken,
		"--wait", "--timeout", "5m"}
	if out, err := c.helm(ctx, install...); err != nil {
		c.dump(ctx)
		t.Fatalf("helm install: %v\n%s", err, out)
	}
	t.Logf("chart installed after %s", time.Since(start).Round(time.Second))

	t.Run("pods ready", func(t *testing.T) {
		if out, err := c.kubectl(ctx, "-n", namespace, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s"); err != nil {
			c.dump(ctx)
			t.Fatalf("%v\n%s", err, out)
		}
		// One agent per node, on the node's network.
		out, err := c.kubectl(ctx, "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/component=agent",
			"-o", `jsonpath={range .items[*]}{.spec.nodeName} {.status.podIP} {.spec.hostNetwork}{"\n"}{end}`)
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
			f := strings.Fields(l)
			if len(f) != 3 || f[2] != "true" {
				t.Fatalf("agent pod %q is not on host networking", l)
			}
			for i, n := range c.nodes {
				if n.name == f[0] && f[1] != nodeIP(i) {
					t.Fatalf("agent on %s has IP %s, want the node's %s", f[0], f[1], nodeIP(i))
				}
			}
			seen[f[0]] = true
		}
		if len(seen) != len(c.nodes) {
			t.Fatalf("agents on %v, want one on each of %d nodes", seen, len(c.nodes))
		}
	})

	t.Run("hosts.toml on each node", func(t *testing.T) {
		for _, n := range c.nodes {
			// The directory bound over /etc/containerd in the node's mount
			// namespace: what this node's containerd reads
			// (config_path = /etc/containerd/certs.d).
			p := filepath.Join(n.hostDirs["/etc/containerd"], "certs.d", registryHost, "hosts.toml")
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatalf("%s: %v", n.name, err)
			}
			if !strings.Contains(string(b), mirrorAddr) {
				t.Fatalf("%s: hosts.toml does not send pulls to the agent:\n%s", n.name, b)
			}
			// And the node itself sees it there.
			if _, err := c.nodeExec(ctx, n, "cat", "/etc/containerd/certs.d/"+registryHost+"/hosts.toml"); err != nil {
				t.Fatal(err)
			}
		}
	})

	regAddr := c.podAddr(ctx, "registry", 5000)
	cold := bigImage(t, 4, 17<<20)
	push(t, c.net.cp, regAddr+"/test/cold:v1", cold)
	size := imageBytes(t, cold)

	t.Run("deployment pulls through the agents and between nodes", func(t *testing.T) {
		before := c.agentBytes(ctx, t)
		c.deploy(ctx, t, "cold", registryHost+"/test/cold:v1")
		after := c.agentBytes(ctx, t)
		reg := after["registry"] - before["registry"]
		peer := after["peer"] - before["peer"]
		t.Logf("image %d bytes; agents downloaded %d from the registry, %d from the other node", size, reg, peer)
		if reg+peer < 2*size*95/100 {
			t.Fatalf("agents downloaded %d bytes for two nodes of a %d-byte image: pulls did not go through them", reg+peer, size)
		}
		if reg > size*11/10 {
			t.Fatalf("registry sent %d bytes for a %d-byte image pulled by 2 nodes: want about once", reg, size)
		}
		if peer < size*4/10 {
			t.Fatalf("only %d bytes came from the other node (image %d)", peer, size)
		}
	})

	t.Run("preheat through the Service, then a pull fetches nothing", func(t *testing.T) {
		warm := bigImage(t, 4, 17<<20)
		push(t, c.net.cp, regAddr+"/test/warm:v1", warm)
		c.preheat(ctx, t, preheatToken, registryHost+"/test/warm:v1")
		before := c.agentBytes(ctx, t)
		c.deploy(ctx, t, "warm", registryHost+"/test/warm:v1")
		after := c.agentBytes(ctx, t)
		if d := after["registry"] + after["peer"] - before["registry"] - before["peer"]; d != 0 {
			t.Fatalf("after preheat the pull downloaded %d bytes", d)
		}
		if after["cache"] <= before["cache"] {
			t.Fatal("the pull after preheat was not served from the agents' caches")
		}
	})

	t.Run("image volume through the agent", func(t *testing.T) {
		art := image(t, nil, "", layer(t, []file{{path: "/hello.txt", mode: 0o644, data: []byte("shoal image volume\n")}}))
		push(t, c.net.cp, regAddr+"/test/artifact:v1", art)
		before := c.agentMirrorRequests(ctx, t)
		pod := fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: imagevol, namespace: default}
spec:
  restartPolicy: Never
  containers:
    - name: c
      image: %s/busybox:test
      command: [cat, /art/hello.txt]
      volumeMounts: [{name: art, mountPath: /art}]
  volumes:
    - name: art
      image: {reference: %s/test/artifact:v1, pullPolicy: Always}
`, boot, registryHost)
		c.apply(ctx, t, pod)
		if out, err := c.kubectl(ctx, "wait", "--for=jsonpath={.status.phase}=Succeeded", "pod/imagevol", "--timeout=120s"); err != nil {
			c.dump(ctx)
			t.Fatalf("%v\n%s", err, out)
		}
		logs, err := c.kubectl(ctx, "logs", "imagevol")
		if err != nil || logs != "shoal image volume\n" {
			t.Fatalf("image volume content %q, %v", logs, err)
		}
		if after := c.agentMirrorRequests(ctx, t); after <= before {
			t.Fatal("the image volume's pull did not go through an agent")
		}
	})

	t.Run("upgrade with a rotated join secret keeps pulls working", func(t *testing.T) {
		newSecret := hexSecret()
		out, err := c.helm(ctx, "upgrade", release, chart, "-n", namespace, "--reuse-values",
			"--set", "cluster.secret="+newSecret, "--set", "cluster.rotating=true", "--set", "cluster.previousSecret="+joinSecret,
			"--wait", "--timeout", "5m")
		if err != nil {
			c.dump(ctx)
			t.Fatalf("helm upgrade: %v\n%s", err, out)
		}
		next := bigImage(t, 2, 8<<20)
		push(t, c.net.cp, regAddr+"/test/rotated:v1", next)
		before := c.agentBytes(ctx, t)
		c.deploy(ctx, t, "rotated", registryHost+"/test/rotated:v1")
		after := c.agentBytes(ctx, t)
		if after["registry"]+after["peer"] <= before["registry"]+before["peer"] {
			t.Fatal("after the upgrade pulls no longer go through the agents")
		}
	})

	t.Run("uninstall leaves the nodes clean", func(t *testing.T) {
		for _, d := range []string{"cold", "warm", "rotated"} {
			_, _ = c.kubectl(ctx, "delete", "deployment", d, "--wait=true")
		}
		if out, err := c.helm(ctx, "uninstall", release, "-n", namespace, "--wait", "--timeout", "3m"); err != nil {
			t.Fatalf("helm uninstall: %v\n%s", err, out)
		}
		for _, n := range c.nodes {
			p := filepath.Join(n.hostDirs["/etc/containerd"], "certs.d", registryHost)
			if _, err := os.Stat(p); err == nil {
				t.Errorf("%s: %s is still there after uninstall: containerd keeps sending pulls to a mirror that is gone", n.name, p)
			}
			cache := filepath.Join(n.hostDirs["/var/lib/shoal"], "agent")
			if _, err := os.Stat(cache); err == nil {
				t.Errorf("%s: the agent's cache %s is still there after uninstall", n.name, cache)
			}
		}
		// The hooks that cleaned the nodes are gone too.
		if out, err := c.kubectl(ctx, "-n", namespace, "get", "daemonsets,pods,serviceaccounts,roles,rolebindings",
			"-l", "app.kubernetes.io/instance="+release, "-o", "name"); err != nil || strings.TrimSpace(out) != "" {
			t.Errorf("left in namespace %s after uninstall: %q %v", namespace, out, err)
		}
	})
	t.Logf("whole run %s", time.Since(start).Round(time.Second))
}

func testTempDir(t *testing.T) string {
	// Short: containerd's and the shims' socket paths must fit in 108 bytes.
	d, err := os.MkdirTemp("", "k8s-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func hexSecret() string {
	b := make([]byte, 32)
	f, _ := os.Open("/dev/urandom")
	defer f.Close()
	_, _ = io.ReadFull(f, b)
	return fmt.Sprintf("%x", b)
}

func imageBytes(t *testing.T, img v1.Image) int64 {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	n := m.Config.Size
	for _, l := range m.Layers {
		n += l.Size
	}
	return n
}

// podAddr is ip:port of the chart's component pod, reachable from the
// control plane's namespace (it routes the pod networks).
func (c *cluster) podAddr(ctx context.Context, component string, port int) string {
	c.t.Helper()
	out, err := c.kubectl(ctx, "-n", namespace, "get", "pods", "-l", "app.kubernetes.io/component="+component,
		"-o", "jsonpath={.items[0].status.podIP}")
	if err != nil || strings.TrimSpace(out) == "" {
		c.t.Fatalf("%s pod IP: %q %v", component, out, err)
	}
	return fmt.Sprintf("%s:%d", strings.TrimSpace(out), port)
}

func (c *cluster) apply(ctx context.Context, t *testing.T, manifest string) {
	t.Helper()
	p := writeFile(t, c.dir, fmt.Sprintf("manifest-%d.yaml", time.Now().UnixNano()), manifest)
	if out, err := c.kubectl(ctx, "apply", "-f", p); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
}

// deploy runs a Deployment of image with one replica on each node and
// waits until both run.
func (c *cluster) deploy(ctx context.Context, t *testing.T, name, image string) {
	t.Helper()
	c.apply(ctx, t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[1]s, namespace: default}
spec:
  replicas: %[3]d
  selector: {matchLabels: {app: %[1]s}}
  template:
    metadata: {labels: {app: %[1]s}}
    spec:
      terminationGracePeriodSeconds: 1
      affinity:
        podAntiAffinity:
          requiredDuringSchedulingIgnoredDuringExecution:
            - labelSelector: {matchLabels: {app: %[1]s}}
              topologyKey: kubernetes.io/hostname
      containers:
        - name: c
          image: %[2]s
          imagePullPolicy: Always
`, name, image, len(c.nodes)))
	if out, err := c.kubectl(ctx, "rollout", "status", "deployment/"+name, "--timeout=300s"); err != nil {
		c.dump(ctx)
		t.Fatalf("%v\n%s", err, out)
	}
}

// agentMetrics reads every agent's /metrics on its node's loopback.
func (c *cluster) agentMetrics(ctx context.Context, t *testing.T) []string {
	t.Helper()
	var out []string
	for _, n := range c.nodes {
		resp, err := nsClient(n.ns).Get("http://" + mirrorAddr + "/metrics")
		if err != nil {
			t.Fatalf("%s agent metrics: %v", n.name, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		out = append(out, string(b))
	}
	return out
}

// agentBytes sums shoal_agent_blob_bytes_total by source over the agents.
func (c *cluster) agentBytes(ctx context.Context, t *testing.T) map[string]int64 {
	t.Helper()
	sum := map[string]int64{}
	for _, m := range c.agentMetrics(ctx, t) {
		sc := bufio.NewScanner(strings.NewReader(m))
		for sc.Scan() {
			l := sc.Text()
			if !strings.HasPrefix(l, "shoal_agent_blob_bytes_total{") {
				continue
			}
			i := strings.Index(l, `source="`)
			j := strings.LastIndex(l, " ")
			if i < 0 || j < 0 {
				continue
			}
			src := l[i+8:]
			src = src[:strings.Index(src, `"`)]
			v, _ := strconv.ParseFloat(l[j+1:], 64)
			sum[src] += int64(v)
		}
	}
	return sum
}

// agentMirrorRequests counts manifest and blob requests the agents' mirrors
// answered.
func (c *cluster) agentMirrorRequests(ctx context.Context, t *testing.T) int64 {
	t.Helper()
	var n int64
	for _, m := range c.agentMetrics(ctx, t) {
		for _, l := range strings.Split(m, "\n") {
			if strings.HasPrefix(l, "shoal_agent_mirror_requests_total{") && (strings.Contains(l, `kind="manifest"`) || strings.Contains(l, `kind="blob"`)) {
				v, _ := strconv.ParseFloat(l[strings.LastIndex(l, " ")+1:], 64)
				n += int64(v)
			}
		}
	}
	return n
}

// preheat creates a job through the preheat Service (its ClusterIP, from a
// node, through kube-proxy) with the chart's token and waits for SUCCESS
// on every node.
func (c *cluster) preheat(ctx context.Context, t *testing.T, token, image string) {
	t.Helper()
	ip, err := c.kubectl(ctx, "-n", namespace, "get", "svc", fullname+"-preheat", "-o", "jsonpath={.spec.clusterIP}:{.spec.ports[0].port}")
	if err != nil {
		t.Fatal(err)
	}
	api := "http://" + strings.TrimSpace(ip)
	cl := nsClient(c.nodes[0].ns)
	call := func(method, path, body string, out any) error {
		req, _ := http.NewRequestWithContext(ctx, method, api+path, strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer "+token)
		req.Header.Set("Content-Type", "application/json")
		resp, err := cl.Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.StatusCode >= 300 {
			return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
		}
		return json.Unmarshal(b, out)
	}
	var job struct {
		ID       int64  `json:"id"`
		State    string `json:"state"`
		Progress []struct {
			NodeID string `json:"nodeId"`
			State  string `json:"state"`
		} `json:"progress"`
	}
	if err := call("POST", "/api/v1/jobs", fmt.Sprintf(`{"image": %q}`, image), &job); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Minute)
	for job.State != "SUCCESS" {
		if job.State == "FAILURE" || time.Now().After(deadline) {
			t.Fatalf("preheat job %d: %+v", job.ID, job)
		}
		time.Sleep(time.Second)
		if err := call("GET", fmt.Sprintf("/api/v1/jobs/%d", job.ID), "", &job); err != nil {
			t.Fatal(err)
		}
	}
	done := map[string]bool{}
	for _, p := range job.Progress {
		if p.State != "SUCCESS" {
			t.Fatalf("preheat job %d SUCCESS but node %s's blob is %s", job.ID, p.NodeID, p.State)
		}
		done[p.NodeID] = true
	}
	if len(done) != len(c.nodes) {
		t.Fatalf("preheat job %d reached %v, want all %d nodes", job.ID, done, len(c.nodes))
	}
	t.Logf("preheat job %d SUCCESS on %v", job.ID, done)
}

// dump logs the cluster's view when something failed.
func (c *cluster) dump(ctx context.Context) {
	for _, args := range [][]string{
		{"get", "nodes", "-o", "wide"},
		{"get", "pods", "-A", "-o", "wide"},
		{"get", "events", "-A", "--sort-by=.lastTimestamp"},
		{"-n", namespace, "logs", "-l", "app.kubernetes.io/component=agent", "--all-containers", "--tail=50"},
	} {
		out, err := c.kubectl(ctx, args...)
		c.t.Logf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
}
