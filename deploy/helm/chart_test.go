// Package helm tests the Helm chart in ./shoal without a cluster: helm lint,
// helm template for several values sets, every rendered object decoded
// strictly into its typed Kubernetes struct, and every rendered Shoal config
// filled the way the pods fill it and loaded by Shoal's own loaders, so the
// chart and the code cannot drift apart. It is a module of its own so that
// k8s.io/api stays out of the shoal binary's build.
package helm

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"fmt"
	"io"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	sigsyaml "sigs.k8s.io/yaml"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/cfgrender"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/shipped"
	"github.com/shoalproject/shoal/preheat"
	"github.com/shoalproject/shoal/registry"
	"github.com/shoalproject/shoal/tracker"
)

const kubeVersion = "1.31.0"

// helmBin is bin/helm (make helm), or $HELM_BIN.
func helmBin(t *testing.T) string {
	t.Helper()
	p := os.Getenv("HELM_BIN")
	if p == "" {
		p, _ = filepath.Abs("../../bin/helm")
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("helm not found at %s: run `make helm` (go install helm.sh/helm/v3/cmd/helm@v3.22.0)", p)
	}
	return p
}

func runHelm(t *testing.T, args ...string) ([]byte, error) {
	t.Helper()
	cmd := exec.Command(helmBin(t), args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("helm %s: %v: %s", strings.Join(args, " "), err, stderr.String())
	}
	return out, nil
}

// valueSets are the values files under test; "" is the chart's defaults.
func valueSets(t *testing.T) []string {
	files, err := filepath.Glob("testdata/*.yaml")
	if err != nil || len(files) < 3 {
		t.Fatalf("testdata values: %v %v", files, err)
	}
	return append([]string{""}, files...)
}

func valuesArgs(f string) []string {
	if f == "" {
		return nil
	}
	return []string{"-f", f}
}

func name(f string) string {
	if f == "" {
		return "defaults"
	}
	return strings.TrimSuffix(filepath.Base(f), ".yaml")
}

func TestLint(t *testing.T) {
	for _, f := range valueSets(t) {
		args := append([]string{"lint", "--strict", "--kube-version", kubeVersion, "shoal"}, valuesArgs(f)...)
		if out, err := runHelm(t, args...); err != nil {
			t.Errorf("%s: %v\n%s", name(f), err, out)
		}
	}
}

// object is one rendered manifest, decoded.
type object struct {
	kind, name string
	obj        any
}

// decodeStrict decodes a manifest into the typed struct for its kind;
// unknown fields, duplicate keys and unknown kinds are errors.
func decodeStrict(doc []byte) (object, error) {
	var tm metav1.TypeMeta
	if err := sigsyaml.Unmarshal(doc, &tm); err != nil {
		return object{}, err
	}
	var o any
	switch tm.APIVersion + "/" + tm.Kind {
	case "v1/ConfigMap":
		o = &corev1.ConfigMap{}
	case "v1/Secret":
		o = &corev1.Secret{}
	case "v1/Service":
		o = &corev1.Service{}
	case "v1/Pod":
		o = &corev1.Pod{}
	case "v1/ServiceAccount":
		o = &corev1.ServiceAccount{}
	case "rbac.authorization.k8s.io/v1/Role":
		o = &rbacv1.Role{}
	case "rbac.authorization.k8s.io/v1/RoleBinding":
		o = &rbacv1.RoleBinding{}
	case "v1/PersistentVolumeClaim":
		o = &corev1.PersistentVolumeClaim{}
	case "apps/v1/Deployment":
		o = &appsv1.Deployment{}
	case "apps/v1/DaemonSet":
		o = &appsv1.DaemonSet{}
	case "networking.k8s.io/v1/NetworkPolicy":
		o = &networkingv1.NetworkPolicy{}
	case "monitoring.coreos.com/v1/ServiceMonitor":
		o = &monitoringv1.ServiceMonitor{}
	default:
		return object{}, fmt.Errorf("unexpected kind %s %s", tm.APIVersion, tm.Kind)
	}
	if err := sigsyaml.UnmarshalStrict(doc, o); err != nil {
		return object{}, fmt.Errorf("%s: %w", tm.Kind, err)
	}
	meta := o.(metav1.Object)
	if meta.GetName() == "" {
		return object{}, fmt.Errorf("%s without a name", tm.Kind)
	}
	return object{kind: tm.Kind, name: meta.GetName(), obj: o}, nil
}

func render(t *testing.T, f string, extra ...string) []object {
	t.Helper()
	args := append([]string{"template", "t", "shoal", "-n", "shoal", "--kube-version", kubeVersion}, valuesArgs(f)...)
	out, err := runHelm(t, append(args, extra...)...)
	if err != nil {
		t.Fatal(err)
	}
	r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(out)))
	var objs []object
	for {
		doc, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(bytes.TrimSpace(stripComments(doc))) == 0 {
			continue
		}
		o, err := decodeStrict(doc)
		if err != nil {
			t.Fatalf("%s: %v\n%s", name(f), err, doc)
		}
		objs = append(objs, o)
	}
	return objs
}

func stripComments(doc []byte) []byte {
	var b bytes.Buffer
	for _, l := range strings.Split(string(doc), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "#") {
			b.WriteString(l + "\n")
		}
	}
	return b.Bytes()
}

// workload is a pod template with its owner's name.
type workload struct {
	name   string
	labels map[string]string
	spec   corev1.PodSpec
}

func TestTemplate(t *testing.T) {
	for _, f := range valueSets(t) {
		t.Run(name(f), func(t *testing.T) {
			objs := render(t, f)
			byKind := map[string]map[string]any{}
			var pods []workload
			for _, o := range objs {
				if byKind[o.kind] == nil {
					byKind[o.kind] = map[string]any{}
				}
				if _, dup := byKind[o.kind][o.name]; dup {
					t.Errorf("%s %s rendered twice", o.kind, o.name)
				}
				byKind[o.kind][o.name] = o.obj
				switch w := o.obj.(type) {
				case *appsv1.Deployment:
					pods = append(pods, workload{w.Name, w.Spec.Template.Labels, w.Spec.Template.Spec})
					checkSelector(t, w.Name, w.Spec.Selector, w.Spec.Template.Labels)
				case *appsv1.DaemonSet:
					pods = append(pods, workload{w.Name, w.Spec.Template.Labels, w.Spec.Template.Spec})
					checkSelector(t, w.Name, w.Spec.Selector, w.Spec.Template.Labels)
				}
			}
			loaded := map[string]bool{}
			var comps []loadedPod
			for _, w := range pods {
				if p := checkPod(t, w, byKind); p.component != "" {
					loaded[p.component] = true
					comps = append(comps, p)
				}
			}
			checkMembership(t, comps)
			checkPreheatRegistries(t, comps)
			checkTrackerAPI(t, comps, pods, byKind)
			checkPreheatPolicy(t, pods, byKind)
			// Every config the chart renders is loaded by a pod, and the other
			// way round.
			for n, o := range byKind["ConfigMap"] {
				if c := o.(*corev1.ConfigMap).Annotations["shoal.io/config"]; c != "" && !loaded[c] {
					t.Errorf("ConfigMap %s (%s) is mounted by no workload", n, c)
				}
			}
			if len(loaded) == 0 {
				t.Fatal("no Shoal component rendered")
			}
			t.Logf("%d objects, configs loaded: %v", len(objs), keys(loaded))
		})
	}
}

// chosenSecret reports whether the env var carries a secret Shoal chooses
// and component checks. Not: credentials of other systems (Redis, S3,
// upstream registries: their owners choose them), the preheat token the
// registry only sends (preheat checks it), and the registry's http.secret,
// which distribution reads as written and the registry checks only when the
// p2p middleware has no secrets of its own.
func chosenSecret(component, env string) bool {
	switch {
	case env == "SHOAL_REDIS_PASSWORD", strings.HasPrefix(env, "SHOAL_S3_"), strings.HasPrefix(env, "SHOAL_UPSTREAM_"):
		return false
	case component == "registry" && (env == "SHOAL_PREHEAT_API_TOKEN" || env == "SHOAL_REGISTRY_HTTP_SECRET"):
		return false
	}
	return true
}

// checkPreheatPolicy: a rendered preheat has a NetworkPolicy selecting its
// pods that opens only its API port.
func checkPreheatPolicy(t *testing.T, pods []workload, byKind map[string]map[string]any) {
	t.Helper()
	for _, w := range pods {
		if w.labels["app.kubernetes.io/component"] != "preheat" {
			continue
		}
		found := false
		for n, o := range byKind["NetworkPolicy"] {
			np := o.(*networkingv1.NetworkPolicy)
			sel, err := metav1.LabelSelectorAsSelector(&np.Spec.PodSelector)
			if err != nil || len(np.Spec.PodSelector.MatchLabels) == 0 || !sel.Matches(labels.Set(w.labels)) {
				continue
			}
			found = true
			if len(np.Spec.Ingress) != 1 || len(np.Spec.Ingress[0].From) == 0 {
				t.Errorf("NetworkPolicy %s: want one ingress rule with sources, got %+v", n, np.Spec.Ingress)
				continue
			}
			for _, p := range np.Spec.Ingress[0].Ports {
				if p.Port == nil || p.Port.String() != "http" {
					t.Errorf("NetworkPolicy %s opens port %v, want only http", n, p.Port)
				}
			}
		}
		if !found {
			t.Errorf("%s: no NetworkPolicy selects preheat's pods", w.name)
		}
	}
}

func keys(m map[string]bool) []string {
	var s []string
	for k := range m {
		s = append(s, k)
	}
	sort.Strings(s)
	return s
}

func checkSelector(t *testing.T, name string, sel *metav1.LabelSelector, labels map[string]string) {
	t.Helper()
	for k, v := range sel.MatchLabels {
		if labels[k] != v {
			t.Errorf("%s: selector %s=%s does not match its pod template", name, k, v)
		}
	}
}

// loadedPod is what checkPod found in one Shoal pod: its component, its
// config as the component loaded it, and where its join secret came from.
type loadedPod struct {
	name, component string
	agent           *agent.Config
	preheat         *preheat.Config
	// joinRef is the Secret key of SHOAL_CLUSTER_SECRET (and of the
	// previous one while rotating); joinEnv the values the pod's renderer
	// got for them; join the secrets the loaded config holds.
	joinRef, joinPrevRef *corev1.SecretKeySelector
	joinEnv, join        []string
	// apiTokenRef is the Secret key of SHOAL_TRACKER_API_TOKEN; apiTokens
	// the tracker's resolved apiTokens, or preheat's resolved
	// tracker.token; trackerURL preheat's tracker.url.
	apiTokenRef *corev1.SecretKeySelector
	apiTokens   []string
	trackerURL  string
}

// checkMembership: agents, preheat, the registry's seeder and the tracker
// must hold the same join secret, or they refuse each other at the TLS
// handshake (the tracker: refuses the agents' announces). Each
// must read it from the same Secret key, and the config each loaded must
// hold exactly the value that key gives (current first, then the previous
// one while rotating).
func checkMembership(t *testing.T, pods []loadedPod) {
	t.Helper()
	var first *loadedPod
	members := 0
	for i := range pods {
		p := &pods[i]
		members++
		if p.joinRef == nil {
			t.Errorf("%s: no SHOAL_CLUSTER_SECRET (the join secret) for %s", p.name, p.component)
			continue
		}
		if fmt.Sprint(p.join) != fmt.Sprint(p.joinEnv) {
			t.Errorf("%s: %s loaded join secrets that are not the Secret's (%d loaded, %d from the Secret)", p.name, p.component, len(p.join), len(p.joinEnv))
		}
		if first == nil {
			first = p
			continue
		}
		if *p.joinRef != *first.joinRef || fmt.Sprint(p.joinPrevRef) != fmt.Sprint(first.joinPrevRef) {
			t.Errorf("join secret: %s reads %v (previous %v), %s reads %v (previous %v)", p.name, p.joinRef, p.joinPrevRef, first.name, first.joinRef, first.joinPrevRef)
		}
		if fmt.Sprint(p.join) != fmt.Sprint(first.join) {
			t.Errorf("join secret: %s and %s loaded different secrets", p.name, first.name)
		}
	}
	if members == 0 {
		return
	}
	if first == nil || first.join[0] == "" {
		t.Errorf("no member holds a join secret")
	}
}

// checkPreheatRegistries: every registry an agent fetches from is one
// preheat may send jobs to (preheat refuses the others before connecting).
func checkPreheatRegistries(t *testing.T, pods []loadedPod) {
	t.Helper()
	var ph *preheat.Config
	for _, p := range pods {
		if p.preheat != nil {
			ph = p.preheat
		}
	}
	if ph == nil {
		return
	}
	allowed := map[string]bool{strings.TrimSuffix(ph.Registry, "/"): true}
	for _, r := range ph.Registries {
		allowed[strings.TrimSuffix(r, "/")] = true
	}
	for _, p := range pods {
		if p.agent == nil {
			continue
		}
		for _, u := range p.agent.Upstreams {
			if !allowed[u.URL] {
				t.Errorf("%s: agent upstream %s is not among preheat's registries %v", p.name, u.URL, allowed)
			}
		}
	}
}

// checkTrackerAPI: the console's Swarms view works only if preheat calls the
// tracker's Service with a token the tracker accepts. Both must read it from
// the same Secret key, and each loaded config must hold the value that key
// gives; preheat's tracker.url must be the tracker Service's base URL.
func checkTrackerAPI(t *testing.T, pods []loadedPod, ws []workload, byKind map[string]map[string]any) {
	t.Helper()
	var tr, ph *loadedPod
	for i := range pods {
		switch pods[i].component {
		case "tracker":
			tr = &pods[i]
		case "preheat":
			ph = &pods[i]
		}
	}
	if tr != nil && (tr.apiTokenRef == nil || len(tr.apiTokens) != 1 || tr.apiTokens[0] == "") {
		t.Errorf("%s: swarm listing off (apiTokens %d, from %v)", tr.name, len(tr.apiTokens), tr.apiTokenRef)
	}
	if ph == nil {
		return
	}
	if tr == nil {
		if ph.trackerURL != "" || ph.apiTokenRef != nil {
			t.Errorf("%s: tracker.url %q without a tracker", ph.name, ph.trackerURL)
		}
		return
	}
	if ph.apiTokenRef == nil || *ph.apiTokenRef != *tr.apiTokenRef {
		t.Errorf("tracker API token: %s reads %v, %s reads %v", ph.name, ph.apiTokenRef, tr.name, tr.apiTokenRef)
	}
	if len(ph.apiTokens) != 1 || fmt.Sprint(ph.apiTokens) != fmt.Sprint(tr.apiTokens) {
		t.Errorf("tracker API token: %s loaded %d token(s) that are not the tracker's", ph.name, len(ph.apiTokens))
	}
	// The Service in front of the tracker's pods, on the container's port.
	var labels map[string]string
	for _, w := range ws {
		if w.name == tr.name {
			labels = w.labels
		}
	}
	var want []string
	for _, o := range byKind["Service"] {
		svc := o.(*corev1.Service)
		if len(svc.Spec.Selector) == 0 {
			continue
		}
		selects := true
		for k, v := range svc.Spec.Selector {
			selects = selects && labels[k] == v
		}
		if !selects {
			continue
		}
		for _, p := range svc.Spec.Ports {
			if p.TargetPort.String() == "http" {
				want = append(want, fmt.Sprintf("http://%s.shoal.svc.cluster.local:%d", svc.Name, p.Port))
			}
		}
	}
	if len(want) != 1 || ph.trackerURL != want[0] {
		t.Errorf("%s: tracker.url %q, want the tracker Service %v", ph.name, ph.trackerURL, want)
	}
}

// checkPod follows a Shoal pod's config init container: the template from
// its ConfigMap, its environment (Secret keys must exist in the chart's
// Secret when the chart makes it; downward API values and external Secrets
// get stand-ins), renders it as `shoal config-render` does, and loads the
// result with the component's own loader.
func checkPod(t *testing.T, w workload, byKind map[string]map[string]any) loadedPod {
	t.Helper()
	var render *corev1.Container
	for i := range w.spec.InitContainers {
		if w.spec.InitContainers[i].Name == "config" {
			render = &w.spec.InitContainers[i]
		}
	}
	if render == nil {
		return loadedPod{} // not a Shoal component (the bundled Redis)
	}
	if len(w.spec.Containers) != 1 {
		t.Fatalf("%s: %d containers", w.name, len(w.spec.Containers))
	}
	main := w.spec.Containers[0]
	args := render.Args
	if len(args) != 5 || args[0] != "config-render" || args[1] != "--in" || args[3] != "--out" {
		t.Fatalf("%s: config init args %v", w.name, args)
	}
	component := main.Args[0]
	lp := loadedPod{name: w.name, component: component}
	// The rendered config is 0600 (it holds secrets): the component must
	// run as the user that wrote it, or it cannot read it (the agent runs
	// as root without capabilities, which does not override file modes).
	if ru, mu := runAsUser(w.spec, render), runAsUser(w.spec, &main); ru != mu {
		t.Errorf("%s: config written as user %s, read as user %s: the 0600 file is unreadable", w.name, ru, mu)
	}
	// One probe rule for every component: readiness is /healthz, whose
	// checks include dependencies (Redis, storage, the cache disk); liveness
	// only asks whether the process answers, since restarting it mends no
	// dependency and a Redis outage must not restart every replica at once.
	if pr := main.ReadinessProbe; pr == nil || pr.HTTPGet == nil || pr.HTTPGet.Path != "/healthz" {
		t.Errorf("%s: readiness probe %+v is not GET /healthz", w.name, pr)
	}
	if pr := main.LivenessProbe; pr == nil || pr.TCPSocket == nil {
		t.Errorf("%s: liveness probe %+v is not a TCP check", w.name, pr)
	}
	if got := main.Args; len(got) != 3 || got[1] != "--config" || got[2] != args[4] {
		t.Errorf("%s: %v does not read the rendered %s", w.name, got, args[4])
	}
	if len(main.Env) > 0 {
		for _, e := range main.Env {
			if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
				t.Errorf("%s: secret %s in the long-running container's environment; it belongs to the config init container", w.name, e.Name)
			}
		}
	}
	// The template volume's ConfigMap, and the key --in names.
	var cmName string
	for _, v := range w.spec.Volumes {
		if v.Name == "template" && v.ConfigMap != nil {
			cmName = v.ConfigMap.Name
		}
		if v.Name == "config" && (v.EmptyDir == nil || v.EmptyDir.Medium != corev1.StorageMediumMemory) {
			t.Errorf("%s: rendered config (with secrets) not on a memory-backed volume", w.name)
		}
	}
	cm, ok := byKind["ConfigMap"][cmName].(*corev1.ConfigMap)
	if !ok {
		t.Fatalf("%s: template ConfigMap %q not rendered", w.name, cmName)
	}
	if cm.Annotations["shoal.io/config"] != component {
		t.Errorf("%s: ConfigMap %s is for %q, pod runs %q", w.name, cmName, cm.Annotations["shoal.io/config"], component)
	}
	tmpl, ok := cm.Data[filepath.Base(args[2])]
	if !ok {
		t.Fatalf("%s: ConfigMap %s has no key %s", w.name, cmName, filepath.Base(args[2]))
	}
	env := map[string]string{}
	for _, e := range render.Env {
		switch {
		case e.ValueFrom == nil:
			env[e.Name] = e.Value
		case e.ValueFrom.SecretKeyRef != nil:
			ref := e.ValueFrom.SecretKeyRef
			switch e.Name {
			case "SHOAL_CLUSTER_SECRET":
				lp.joinRef = ref
			case "SHOAL_CLUSTER_SECRET_PREVIOUS":
				lp.joinPrevRef = ref
			case "SHOAL_TRACKER_API_TOKEN":
				lp.apiTokenRef = ref
			}
			if s, ok := byKind["Secret"][ref.Name].(*corev1.Secret); ok {
				v, ok := s.Data[ref.Key]
				if !ok {
					t.Errorf("%s: %s needs key %s, absent from the chart's Secret %s", w.name, e.Name, ref.Key, ref.Name)
				}
				env[e.Name] = string(v)
			} else {
				// A user's Secret: a value with every character YAML cares about.
				env[e.Name] = `ext"ernal\ #: ` + ref.Name + "/" + ref.Key
			}
		case e.ValueFrom.FieldRef != nil:
			env[e.Name] = map[string]string{"spec.nodeName": "node-1", "status.hostIP": "10.0.0.7", "status.podIP": "10.1.0.9"}[e.ValueFrom.FieldRef.FieldPath]
			if env[e.Name] == "" {
				t.Errorf("%s: unexpected fieldRef %s", w.name, e.ValueFrom.FieldRef.FieldPath)
			}
		default:
			t.Errorf("%s: env %s: unexpected source", w.name, e.Name)
		}
	}
	if lp.joinRef != nil {
		lp.joinEnv = []string{env["SHOAL_CLUSTER_SECRET"]}
	}
	if lp.joinPrevRef != nil {
		lp.joinEnv = append(lp.joinEnv, env["SHOAL_CLUSTER_SECRET_PREVIOUS"])
	}
	out, err := cfgrender.Expand([]byte(tmpl), func(k string) (string, bool) { v, ok := env[k]; return v, ok })
	if err != nil {
		t.Fatalf("%s: %v", w.name, err)
	}
	path := filepath.Join(t.TempDir(), component+".yml")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		t.Fatal(err)
	}
	// The shared shipped-config check (internal/shipped, which also loads
	// configs/): the rendered file loads with every secret resolved, and
	// any one Secret-backed value Shoal chooses replaced by a placeholder
	// stops the start.
	if err := shipped.Load(component, path); err != nil {
		t.Fatalf("%s: %v\n%s", w.name, err, out)
	}
	for _, e := range render.Env {
		if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil || !chosenSecret(component, e.Name) {
			continue
		}
		weak := maps.Clone(env)
		weak[e.Name] = "change-me"
		wout, err := cfgrender.Expand([]byte(tmpl), func(k string) (string, bool) { v, ok := weak[k]; return v, ok })
		if err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		wpath := filepath.Join(t.TempDir(), component+".yml")
		if err := os.WriteFile(wpath, wout, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := shipped.Load(component, wpath); err == nil {
			t.Errorf("%s: %s set to a placeholder, and %s still loads", w.name, e.Name, component)
		}
	}
	switch component {
	case "agent":
		cfg, err := agent.LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v\n%s", w.name, err, out)
		}
		if cfg.Node.ID != "node-1" || !strings.HasPrefix(cfg.Mirror.Addr, "127.0.0.1:") {
			t.Errorf("%s: agent config %+v", w.name, cfg)
		}
		// Preheat calls the control API at the address the node advertises:
		// TLS, on the node's IP (the downward API's status.hostIP).
		if _, port, _ := strings.Cut(strings.TrimPrefix(cfg.Control.Addr, "0.0.0.0"), ":"); cfg.Control.Advertise != "https://10.0.0.7:"+port {
			t.Errorf("%s: control.advertise %q, want https://<node IP>:%s", w.name, cfg.Control.Advertise, port)
		}
		lp.agent = &cfg
		lp.join = append([]string{cfg.Cluster.Secret}, cfg.Cluster.PreviousSecrets...)
		checkAgentPod(t, w, cfg)
	case "tracker":
		cfg, err := tracker.LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v\n%s", w.name, err, out)
		}
		if cfg.Redis.Enabled() && cfg.Redis.MasterName != "" && !cfg.Redis.Password.IsSet() {
			t.Errorf("%s: Sentinel without the password", w.name)
		}
		lp.apiTokens = cfg.APITokens.Values()
		// The tracker hands out only announces signed with the join secret.
		lp.join = append([]string{cfg.Cluster.Secret}, cfg.Cluster.PreviousSecrets...)
	case "preheat":
		cfg, err := preheat.LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v\n%s", w.name, err, out)
		}
		if len(cfg.APITokens) != 1 || cfg.APITokens[0].Value() == "" {
			t.Errorf("%s: preheat API token missing", w.name)
		}
		// No open route: every preheat API call needs a token, and the
		// Harbor provider is either off or token-guarded.
		if cfg.Harbor.Auth == "none" || (len(cfg.Harbor.Clusters) > 0 && len(cfg.Harbor.Tokens) == 0) {
			t.Errorf("%s: Harbor provider without a token: %+v", w.name, cfg.Harbor)
		}
		lp.preheat = &cfg
		lp.join = append([]string{cfg.Cluster.Secret.Value()}, cfg.Cluster.PreviousSecrets.Values()...)
		lp.trackerURL = cfg.Tracker.URL
		if cfg.Tracker.Token.IsSet() {
			lp.apiTokens = []string{cfg.Tracker.Token.Value()}
		}
	case "registry":
		cfg, err := registry.LoadConfig(path)
		if err != nil {
			t.Fatalf("%s: %v\n%s", w.name, err, out)
		}
		mws := cfg.Middleware["storage"]
		if len(mws) != 1 || mws[0].Name != "p2p" {
			t.Fatalf("%s: storage middleware %v", w.name, mws)
		}
		o, err := driver.ParseOptions(mws[0].Options)
		if err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		if len(o.Tracker.Secrets) == 0 || o.Tracker.Secrets[0] == "" {
			t.Errorf("%s: no tracker secret", w.name)
		}
		// URLs are signed with a secret of their own (rotatable), not the
		// http.secret fallback.
		if len(o.Secrets) == 0 {
			t.Errorf("%s: p2p secrets not set", w.name)
		}
		for i, sv := range o.Secrets {
			if sv == "" || sv == cfg.HTTP.Secret {
				t.Errorf("%s: p2p secrets[%d] empty or the http.secret", w.name, i)
			}
		}
		// The registry resolves these at start, with the rules every Shoal
		// secret follows (length, no placeholders).
		if _, err := secret.ResolveAll("p2p secrets", o.Secrets); err != nil {
			t.Errorf("%s: %v", w.name, err)
		}
		if _, err := secret.ResolveAll("p2p tracker.secrets", o.Tracker.Secrets); err != nil {
			t.Errorf("%s: %v", w.name, err)
		}
		if want := map[bool]int{true: 2, false: 1}[env["SHOAL_REGISTRY_URL_SECRET_PREVIOUS"] != ""]; len(o.Secrets) != want {
			t.Errorf("%s: %d p2p secrets, want %d", w.name, len(o.Secrets), want)
		}
		if cfg.HTTP.Secret == "" {
			t.Errorf("%s: no http.secret", w.name)
		}
		if cfg.Storage.Type() != "filesystem" && cfg.Storage.Type() != "s3" {
			t.Errorf("%s: storage %s", w.name, cfg.Storage.Type())
		}
		join, err := o.Cluster.Secrets()
		if err != nil {
			t.Fatalf("%s: %v", w.name, err)
		}
		lp.join = join
	default:
		t.Fatalf("%s: unknown component %q", w.name, component)
	}
	return lp
}

// runAsUser is the user a container runs as: its own runAsUser, else the
// pod's, else the image's ("image").
func runAsUser(spec corev1.PodSpec, c *corev1.Container) string {
	if c.SecurityContext != nil && c.SecurityContext.RunAsUser != nil {
		return fmt.Sprint(*c.SecurityContext.RunAsUser)
	}
	if spec.SecurityContext != nil && spec.SecurityContext.RunAsUser != nil {
		return fmt.Sprint(*spec.SecurityContext.RunAsUser)
	}
	return "image"
}

// checkAgentPod checks what only the agent has: host network, and the
// containerd-hosts init container, run for real against a node file system
// in a temp dir with the args the chart gives it.
func checkAgentPod(t *testing.T, w workload, cfg agent.Config) {
	t.Helper()
	if !w.spec.HostNetwork || w.spec.DNSPolicy != corev1.DNSClusterFirstWithHostNet {
		t.Errorf("%s: agent needs hostNetwork with ClusterFirstWithHostNet", w.name)
	}
	// The control port admits cluster members only, and the kubelet is
	// none: readiness is the mirror's /healthz on the node's loopback,
	// liveness that the mirror answers there at all (a failing health
	// check, a full cache disk, is not fixed by a restart).
	if pr := w.spec.Containers[0].ReadinessProbe; pr == nil || pr.HTTPGet == nil {
		t.Errorf("%s: agent readiness probe %+v is not an HTTP GET", w.name, pr)
	} else if got := net.JoinHostPort(pr.HTTPGet.Host, pr.HTTPGet.Port.String()); got != cfg.Mirror.Addr || pr.HTTPGet.Path != "/healthz" {
		t.Errorf("%s: agent readiness probe GET %s%s, want the mirror's %s/healthz", w.name, got, pr.HTTPGet.Path, cfg.Mirror.Addr)
	}
	if pr := w.spec.Containers[0].LivenessProbe; pr == nil || pr.TCPSocket == nil {
		t.Errorf("%s: agent liveness probe %+v is not a TCP check", w.name, pr)
	} else if got := net.JoinHostPort(pr.TCPSocket.Host, pr.TCPSocket.Port.String()); got != cfg.Mirror.Addr {
		t.Errorf("%s: agent liveness probe %s, want the mirror's %s", w.name, got, cfg.Mirror.Addr)
	}
	// A metrics listener beyond loopback is the one Prometheus scrapes: the
	// pod names its port, and the config demands the token (LoadConfig
	// refused it otherwise).
	if cfg.Metrics.Addr != "" {
		_, port, _ := net.SplitHostPort(cfg.Metrics.Addr)
		found := false
		for _, p := range w.spec.Containers[0].Ports {
			found = found || (p.Name == "metrics" && fmt.Sprint(p.ContainerPort) == port)
		}
		if !found || !cfg.Metrics.Token.IsSet() {
			t.Errorf("%s: metrics.addr %s without a container port named metrics or without a token", w.name, cfg.Metrics.Addr)
		}
	}
	var init *corev1.Container
	for i := range w.spec.InitContainers {
		if w.spec.InitContainers[i].Name == "containerd-hosts" {
			init = &w.spec.InitContainers[i]
		}
	}
	if init == nil {
		return
	}
	flags := map[string]string{}
	var regs []string
	for _, a := range init.Args[1:] {
		k, v, _ := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if k == "registry" {
			regs = append(regs, v)
		} else {
			flags[k] = v
		}
	}
	// Every registry containerd is pointed at is one the agent serves.
	hosts := map[string]bool{}
	for _, u := range cfg.Upstreams {
		hosts[u.Host] = true
	}
	for _, r := range regs {
		h, _, _ := strings.Cut(r, "=")
		if h != "_default" && !hosts[h] {
			t.Errorf("%s: containerd sends %s to the agent, which has no upstream for it (%v)", w.name, h, cfg.Upstreams)
		}
	}
	if want := "http://" + cfg.Mirror.Addr; flags["mirror"] != want {
		t.Errorf("%s: hosts.toml points at %s, the mirror listens on %s", w.name, flags["mirror"], want)
	}
	// The mounts must cover what the command reads and writes under --host-root.
	mounted := func(p string) bool {
		for _, m := range init.VolumeMounts {
			if strings.HasPrefix(flags["host-root"]+p, m.MountPath) {
				return true
			}
		}
		return false
	}
	if !mounted(flags["certs-dir"]) || (flags["check-config"] == "true" && !mounted(flags["containerd-config"])) {
		t.Errorf("%s: containerd-hosts mounts %v do not cover %v", w.name, init.VolumeMounts, flags)
	}
	root := t.TempDir()
	cfgFile := filepath.Join(root, flags["containerd-config"])
	os.MkdirAll(filepath.Dir(cfgFile), 0o755)
	os.WriteFile(cfgFile, []byte(fmt.Sprintf("version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = %q\n", flags["certs-dir"])), 0o644)
	args := append(append([]string(nil), init.Args...), "--host-root="+root)
	cmd := exec.Command(shoalBin(t), args...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("%s: shoal %v: %v\n%s", w.name, args, err, out)
	}
	for _, r := range regs {
		h, _, _ := strings.Cut(r, "=")
		if _, err := os.Stat(filepath.Join(root, flags["certs-dir"], h, "hosts.toml")); err != nil {
			t.Errorf("%s: %v", w.name, err)
		}
	}
}

var builtShoal string

// shoalBin is $SHOAL_BIN (make test builds bin/shoal) or a fresh build.
func shoalBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SHOAL_BIN"); p != "" {
		return p
	}
	if builtShoal == "" {
		dir, err := os.MkdirTemp("", "shoal-chart-test")
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(dir, "shoal")
		cmd := exec.Command("go", "build", "-o", p, "./cmd/shoal")
		cmd.Dir = "../.." // the shoal module itself, with its own go.sum
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("build shoal: %v\n%s", err, out)
		}
		builtShoal = p
	}
	return builtShoal
}

// The chart refuses values that cannot work, with a message naming the fix.
func TestTemplateRejects(t *testing.T) {
	for _, tc := range []struct {
		set  []string
		want string
	}{
		{[]string{"redis.bundled.enabled=false", "tracker.replicas=2"}, "tracker.replicas > 1 needs Redis"},
		{[]string{"redis.bundled.enabled=false", "preheat.replicas=3"}, "preheat.replicas > 1 needs Redis"},
		{[]string{"registry.replicas=2"}, "needs registry.storage.type s3"},
		{[]string{"registry.storage.type=s3"}, "registry.storage.s3.bucket is required"},
		{[]string{"registry.storage.type=gcs"}, "must be filesystem or s3"},
		{[]string{"registry.enabled=false"}, "agent.registries must name at least one registry"},
		{[]string{"secrets.rotating=true"}, "secrets.trackerSecretPrevious is required"},
		{[]string{"cluster.rotating=true"}, "cluster.previousSecret is required"},
		{[]string{"secrets.rotatingURLSecret=true"}, "secrets.registryURLSecretPrevious is required"},
		{[]string{"registry.enabled=false", "agent.registries[0].host=_default"}, "preheat needs a registry"},
		{[]string{"cluster.secret=too-short-for-a-join-secret"}, "cluster.secret must be at least 32 bytes"},
		{[]string{"secrets.trackerSecret=short"}, "secrets.trackerSecret must be at least 32 bytes"},
		{[]string{"secrets.trackerAPIToken=short"}, "secrets.trackerAPIToken must be at least 32 bytes"},
		{[]string{"agent.cache.hostPath=/cache"}, "agent.cache.hostPath must be at least two levels deep"},
		{[]string{"secrets.trackerSecret=same-value-0123456789abcdef0123456789", "secrets.trackerAPIToken=same-value-0123456789abcdef0123456789"}, "secrets.trackerAPIToken must differ"},
	} {
		args := []string{"template", "t", "shoal", "--kube-version", kubeVersion}
		for _, s := range tc.set {
			args = append(args, "--set", s)
		}
		_, err := runHelm(t, args...)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: err = %v, want %q", tc.set, err, tc.want)
		}
	}
}

// Secrets the chart generates stay out of ConfigMaps and survive as the
// values given.
func TestSecretsNotInConfigMaps(t *testing.T) {
	objs := render(t, "testdata/s3-sentinel.yaml")
	var secret *corev1.Secret
	for _, o := range objs {
		if s, ok := o.obj.(*corev1.Secret); ok {
			secret = s
		}
	}
	if secret == nil {
		t.Fatal("no Secret rendered")
	}
	if string(secret.Data["tracker-secret"]) != "new-tracker-secret-0123456789abcdef" {
		t.Fatalf("tracker-secret = %q", secret.Data["tracker-secret"])
	}
	for _, o := range objs {
		cm, ok := o.obj.(*corev1.ConfigMap)
		if !ok {
			continue
		}
		for k, v := range cm.Data {
			for sk, sv := range secret.Data {
				if len(sv) > 0 && (strings.Contains(v, string(sv)) || strings.Contains(v, base64.StdEncoding.EncodeToString(sv))) {
					t.Errorf("ConfigMap %s/%s holds secret %s", cm.Name, k, sk)
				}
			}
		}
	}
}

// Every value in values.yaml carries a comment (helm show values is the
// reference).
func TestValuesDocumented(t *testing.T) {
	b, err := os.ReadFile("shoal/values.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := strings.TrimPrefix(path+"."+k.Value, ".")
			documented := k.HeadComment != "" || k.LineComment != ""
			if v.Kind == yaml.MappingNode && len(v.Content) > 0 && !documented {
				walk(v, p) // a group: each of its values carries a comment
				continue
			}
			if !documented {
				t.Errorf("values.yaml: %s has no comment", p)
			}
		}
	}
	walk(doc.Content[0], "")
}
