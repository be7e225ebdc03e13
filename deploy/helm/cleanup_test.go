package helm

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// TestUninstallCleansNodes checks the chart's post-delete hooks for every
// values set: they run on the agents' nodes, take back exactly what the
// agent's init container wrote and the agent's cache (run for real against
// a node file system in a temp dir, with the args the chart gives), their
// readiness probe tells a clean node from a dirty one, and the wait Pod may
// read the one DaemonSet it waits for and nothing else. make k8s-test
// checks the same on a live cluster.
func TestUninstallCleansNodes(t *testing.T) {
	for _, f := range valueSets(t) {
		t.Run(name(f), func(t *testing.T) {
			checkCleanupHooks(t, render(t, f), true)
		})
	}
	t.Run("cleanupOnUninstall=false", func(t *testing.T) {
		checkCleanupHooks(t, render(t, "", "--set", "agent.cleanupOnUninstall=false"), false)
	})
	t.Run("hosts.toml not written", func(t *testing.T) {
		checkCleanupHooks(t, render(t, "", "--set", "agent.containerd.configure=false", "--set", "agent.cache.hostPath=/srv/shoal-cache"), true)
	})
}

func checkCleanupHooks(t *testing.T, objs []object, want bool) {
	t.Helper()
	var agentDS, cleanDS *appsv1.DaemonSet
	var sa *corev1.ServiceAccount
	var role *rbacv1.Role
	var rb *rbacv1.RoleBinding
	var wait *corev1.Pod
	weights := map[string]int{}
	for _, o := range objs {
		meta := o.obj.(metav1.Object)
		ann := meta.GetAnnotations()
		if ann["helm.sh/hook"] == "" {
			if d, ok := o.obj.(*appsv1.DaemonSet); ok && d.Spec.Template.Labels["app.kubernetes.io/component"] == "agent" {
				agentDS = d
			}
			if o.kind == "Pod" || o.kind == "Role" || o.kind == "RoleBinding" || o.kind == "ServiceAccount" {
				t.Errorf("%s %s is not a hook: the chart's only pods and RBAC are the uninstall hooks", o.kind, o.name)
			}
			continue
		}
		if ann["helm.sh/hook"] != "post-delete" {
			t.Errorf("%s %s: hook %q, want post-delete", o.kind, o.name, ann["helm.sh/hook"])
		}
		// hook-succeeded: gone once done; before-hook-creation: a failed
		// run's leftovers, kept for inspection, do not block the next.
		if p := ann["helm.sh/hook-delete-policy"]; !strings.Contains(p, "hook-succeeded") || !strings.Contains(p, "before-hook-creation") {
			t.Errorf("%s %s: delete policy %q", o.kind, o.name, p)
		}
		w, err := strconv.Atoi(ann["helm.sh/hook-weight"])
		if err != nil {
			t.Errorf("%s %s: hook weight %q", o.kind, o.name, ann["helm.sh/hook-weight"])
		}
		weights[o.kind] = w
		switch v := o.obj.(type) {
		case *appsv1.DaemonSet:
			cleanDS = v
		case *corev1.ServiceAccount:
			sa = v
		case *rbacv1.Role:
			role = v
		case *rbacv1.RoleBinding:
			rb = v
		case *corev1.Pod:
			wait = v
		default:
			t.Errorf("unexpected hook %s %s", o.kind, o.name)
		}
	}
	if !want || agentDS == nil {
		if cleanDS != nil || wait != nil || sa != nil || role != nil || rb != nil {
			t.Fatalf("uninstall hooks rendered without agents or with cleanupOnUninstall=false")
		}
		return
	}
	if cleanDS == nil || wait == nil || sa == nil || role == nil || rb == nil {
		t.Fatalf("uninstall hooks missing: DaemonSet %v, wait Pod %v, ServiceAccount %v, Role %v, RoleBinding %v",
			cleanDS != nil, wait != nil, sa != nil, role != nil, rb != nil)
	}
	// Helm creates hooks by weight and waits only for Pods: RBAC before
	// the Pod that uses it, the DaemonSet before the Pod that waits for it.
	order := []string{"ServiceAccount", "Role", "RoleBinding", "DaemonSet", "Pod"}
	for i := 1; i < len(order); i++ {
		if weights[order[i-1]] >= weights[order[i]] {
			t.Errorf("hook weights %v: want %v in that order", weights, order)
		}
	}

	// The same nodes as the agents.
	as, cs := agentDS.Spec.Template.Spec, cleanDS.Spec.Template.Spec
	if !reflect.DeepEqual(as.NodeSelector, cs.NodeSelector) || !reflect.DeepEqual(as.Tolerations, cs.Tolerations) || !reflect.DeepEqual(as.Affinity, cs.Affinity) {
		t.Errorf("node-cleanup runs on other nodes than the agents: selector %v/%v, tolerations %v/%v, affinity %v/%v",
			cs.NodeSelector, as.NodeSelector, cs.Tolerations, as.Tolerations, cs.Affinity, as.Affinity)
	}
	if cs.AutomountServiceAccountToken == nil || *cs.AutomountServiceAccountToken {
		t.Error("node-cleanup pods get an API token they do not use")
	}
	checkSelector(t, cleanDS.Name, cleanDS.Spec.Selector, cleanDS.Spec.Template.Labels)

	// The wait Pod reads that DaemonSet, and may read nothing else.
	if wait.Spec.ServiceAccountName != sa.Name || wait.Spec.RestartPolicy != corev1.RestartPolicyNever {
		t.Errorf("wait Pod: service account %q (want %q), restart %q", wait.Spec.ServiceAccountName, sa.Name, wait.Spec.RestartPolicy)
	}
	if got := wait.Spec.Containers[0].Args; !slices.Equal(got, []string{"node-cleanup-wait", "--daemonset=" + cleanDS.Name}) {
		t.Errorf("wait Pod args %v", got)
	}
	wantRule := rbacv1.PolicyRule{APIGroups: []string{"apps"}, Resources: []string{"daemonsets"}, ResourceNames: []string{cleanDS.Name}, Verbs: []string{"get"}}
	if len(role.Rules) != 1 || !reflect.DeepEqual(role.Rules[0], wantRule) {
		t.Errorf("Role rules %+v, want only %+v", role.Rules, wantRule)
	}
	if rb.RoleRef.Kind != "Role" || rb.RoleRef.Name != role.Name || len(rb.Subjects) != 1 ||
		rb.Subjects[0].Kind != "ServiceAccount" || rb.Subjects[0].Name != sa.Name || rb.Subjects[0].Namespace != "shoal" {
		t.Errorf("RoleBinding %+v does not bind %s to %s", rb, role.Name, sa.Name)
	}

	// What it removes is what the agent wrote: the init container's
	// registries and certs dir, the cache's hostPath.
	c := cs.Containers[0]
	flags, regs := cleanupFlags(c.Args)
	var hostsInit *corev1.Container
	for i := range as.InitContainers {
		if as.InitContainers[i].Name == "containerd-hosts" {
			hostsInit = &as.InitContainers[i]
		}
	}
	if hostsInit != nil {
		iflags, iregs := cleanupFlags(hostsInit.Args)
		if !slices.Equal(regs, iregs) || flags["certs-dir"] != iflags["certs-dir"] {
			t.Errorf("node-cleanup removes %v in %s; the init container wrote %v in %s", regs, flags["certs-dir"], iregs, iflags["certs-dir"])
		}
	} else if len(regs) > 0 {
		t.Errorf("node-cleanup removes hosts.toml for %v, which no init container wrote", regs)
	}
	for _, v := range as.Volumes {
		if v.Name == "cache" && (v.HostPath == nil || filepath.Clean(v.HostPath.Path) != flags["cache-dir"]) {
			t.Errorf("node-cleanup removes cache %s; the agent's is %+v", flags["cache-dir"], v.VolumeSource)
		}
	}
	if c.Args[len(c.Args)-1] != "--hold" {
		t.Errorf("node-cleanup args %v: without --hold the DaemonSet's pod exits and restarts", c.Args)
	}
	// Each path it touches under --host-root is a mount of that node path.
	vols := map[string]string{}
	for _, v := range cs.Volumes {
		if v.HostPath != nil {
			vols[v.Name] = v.HostPath.Path
		}
	}
	covered := func(p string) bool {
		for _, m := range c.VolumeMounts {
			node := strings.TrimPrefix(m.MountPath, flags["host-root"])
			if vols[m.Name] == node && (p == node || strings.HasPrefix(p, node+"/")) {
				return true
			}
		}
		return false
	}
	for _, p := range []string{flags["cache-dir"], flags["certs-dir"]} {
		if p != "" && !covered(p) {
			t.Errorf("node-cleanup touches %s, which no hostPath mount %v covers", p, c.VolumeMounts)
		}
	}
	// The cache directory itself is removed, so its mount is the parent.
	for _, m := range c.VolumeMounts {
		if strings.TrimPrefix(m.MountPath, flags["host-root"]) == flags["cache-dir"] {
			t.Errorf("the cache directory is a mount point of the pod: it cannot be removed")
		}
	}
	probe := c.ReadinessProbe
	if probe == nil || probe.Exec == nil {
		t.Fatalf("node-cleanup readiness probe %+v is not the --check command", probe)
	}
	wantProbe := append([]string{"/usr/local/bin/shoal"}, c.Args[:len(c.Args)-1]...)
	if !slices.Equal(probe.Exec.Command, append(wantProbe, "--check")) {
		t.Errorf("readiness probe %v, want %v --check", probe.Exec.Command, wantProbe)
	}

	// For real, on a node file system in a temp dir.
	root := t.TempDir()
	if hostsInit != nil {
		iflags, _ := cleanupFlags(hostsInit.Args)
		cfgFile := filepath.Join(root, iflags["containerd-config"])
		os.MkdirAll(filepath.Dir(cfgFile), 0o755)
		os.WriteFile(cfgFile, []byte(fmt.Sprintf("version = 3\n[plugins.'io.containerd.cri.v1.images'.registry]\n  config_path = %q\n", iflags["certs-dir"])), 0o644)
		runShoal(t, append(slices.Clone(hostsInit.Args), "--host-root="+root), true)
	}
	cache := filepath.Join(root, flags["cache-dir"])
	for _, d := range []string{"blobs", "partial", "torrents"} {
		os.MkdirAll(filepath.Join(cache, d), 0o700)
	}
	os.WriteFile(filepath.Join(cache, "node.key"), []byte("key"), 0o600)
	check := append(slices.Clone(probe.Exec.Command[1:]), "--host-root="+root)
	runShoal(t, check, false) // not Ready while the node holds Shoal's files
	runShoal(t, append(slices.Clone(c.Args[:len(c.Args)-1]), "--host-root="+root), true)
	runShoal(t, check, true)
	for _, r := range regs {
		h, _, _ := strings.Cut(r, "=")
		if _, err := os.Stat(filepath.Join(root, flags["certs-dir"], h)); !os.IsNotExist(err) {
			t.Errorf("certs.d/%s left after node-cleanup: %v", h, err)
		}
	}
	if _, err := os.Stat(cache); !os.IsNotExist(err) {
		t.Errorf("cache %s left after node-cleanup: %v", flags["cache-dir"], err)
	}
}

// cleanupFlags splits --k=v args (after the subcommand) into flags and the
// repeated --registry values.
func cleanupFlags(args []string) (map[string]string, []string) {
	flags := map[string]string{}
	var regs []string
	for _, a := range args[1:] {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if k == "registry" {
			regs = append(regs, v)
		} else {
			flags[k] = v
		}
	}
	return flags, regs
}

func runShoal(t *testing.T, args []string, succeed bool) {
	t.Helper()
	out, err := exec.Command(shoalBin(t), args...).CombinedOutput()
	if (err == nil) != succeed {
		t.Fatalf("shoal %v: %v (want success %v)\n%s", args, err, succeed, out)
	}
}
