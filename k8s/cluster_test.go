package k8s

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/testenv"
)

// Addresses used only inside the namespaces the test creates.
const (
	subnet      = "10.214.0"
	cpIP        = subnet + ".2"
	serviceCIDR = "10.96.0.0/24"
	clusterCIDR = "10.244.0.0/16"
	// bootstrapRegistry holds the images the cluster needs before Shoal
	// runs (pause, Shoal's own image): a plain distribution registry in
	// the control plane's namespace.
	bootstrapPort = 5001
)

// nodeIP and podCIDR of node i (0-based).
func nodeIP(i int) string  { return fmt.Sprintf("%s.%d", subnet, 11+i) }
func podCIDR(i int) string { return fmt.Sprintf("10.244.%d.0/24", i+1) }

// tools are the programs the cluster runs.
type tools struct {
	k8sDir, etcd, containerd, shim, runc, cniDir, kubectl, helm, registry, coredns, shoal, crictl string
}

func need(t *testing.T, env, def string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p = def
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s: %s missing (%v); make k8s-test builds or installs it", env, p, err)
	}
	return p
}

// findRuntimeTools is what TestNodeRuntime needs: no Kubernetes build.
func findRuntimeTools(t *testing.T) tools {
	t.Helper()
	if os.Getenv("SHOAL_K8S") != "1" {
		t.Skip("real-cluster test: run `make k8s-test` (SHOAL_K8S=1, root)")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs Linux and root (network and mount namespaces, cgroups)")
	}
	root, _ := filepath.Abs("..")
	bin := filepath.Join(root, "bin")
	return tools{
		containerd: need(t, "CONTAINERD2_BIN", filepath.Join(bin, "containerd-v2.4.2", "containerd")),
		shim:       need(t, "CONTAINERD2_SHIM_BIN", filepath.Join(bin, "containerd-shim-v2.4.2", "containerd-shim-runc-v2")),
		runc:       need(t, "RUNC_BIN", "/usr/sbin/runc"),
		cniDir:     need(t, "CNI_BIN_DIR", "/usr/lib/cni"),
		registry:   need(t, "REGISTRY_BIN", filepath.Join(bin, "registry")),
		crictl:     need(t, "CRICTL_BIN", filepath.Join(bin, "crictl-v1.34.0")),
	}
}

func findTools(t *testing.T) tools {
	t.Helper()
	if os.Getenv("SHOAL_K8S") != "1" {
		t.Skip("real-cluster test: run `make k8s-test` (SHOAL_K8S=1, root)")
	}
	if runtime.GOOS != "linux" || os.Geteuid() != 0 {
		t.Skip("needs Linux and root (network and mount namespaces, cgroups)")
	}
	root, _ := filepath.Abs("..")
	bin := filepath.Join(root, "bin")
	tl := tools{
		k8sDir:     need(t, "K8S_BIN", filepath.Join(bin, "k8s-v1.34.12")),
		containerd: need(t, "CONTAINERD2_BIN", filepath.Join(bin, "containerd-v2.4.2", "containerd")),
		shim:       need(t, "CONTAINERD2_SHIM_BIN", filepath.Join(bin, "containerd-shim-v2.4.2", "containerd-shim-runc-v2")),
		runc:       need(t, "RUNC_BIN", "/usr/sbin/runc"),
		cniDir:     need(t, "CNI_BIN_DIR", "/usr/lib/cni"),
		kubectl:    need(t, "KUBECTL_BIN", "/usr/bin/kubectl"),
		helm:       need(t, "HELM_BIN", filepath.Join(bin, "helm")),
		registry:   need(t, "REGISTRY_BIN", filepath.Join(bin, "registry")),
		coredns:    need(t, "COREDNS_BIN", filepath.Join(bin, "coredns-v1.14.1")),
		shoal:      need(t, "SHOAL_STATIC_BIN", filepath.Join(bin, "shoal-static")),
		crictl:     need(t, "CRICTL_BIN", filepath.Join(bin, "crictl-v1.34.0")),
	}
	tl.etcd = need(t, "ETCD_BIN", filepath.Join(tl.k8sDir, "etcd"))
	for _, c := range []string{"kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"} {
		need(t, "K8S_BIN", filepath.Join(tl.k8sDir, c))
	}
	for _, c := range []string{"bridge", "host-local", "loopback", "portmap"} {
		need(t, "CNI_BIN_DIR", filepath.Join(tl.cniDir, c))
	}
	return tl
}

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func must(t *testing.T, args ...string) {
	t.Helper()
	if err := run(args...); err != nil {
		t.Fatal(err)
	}
}

// netNS is one network namespace of the run.
type netNS struct{ name string }

func (n netNS) path() string { return "/run/netns/" + n.name }

// exec runs a command inside the namespace.
func (n netNS) exec(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--net=" + n.path(), "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s (in %s): %v: %s", strings.Join(args, " "), n.name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// DialContext dials from inside the namespace, so the test process needs
// no address of its own: one OS thread per namespace enters it and makes
// every socket there. The thread is kept (locked) for the life of the test
// binary: were it to exit, children forked from it would get their
// parent-death signal (testenv starts them with Pdeathsig).
func (n netNS) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	dialersMu.Lock()
	ch, ok := dialers[n.name]
	if !ok {
		ch = make(chan dialReq)
		dialers[n.name] = ch
		ready := make(chan error, 1)
		go func() {
			runtime.LockOSThread()
			f, err := os.Open(n.path())
			if err == nil {
				err = unix.Setns(int(f.Fd()), unix.CLONE_NEWNET)
				f.Close()
			}
			ready <- err
			if err != nil {
				return // the thread is thrown away with the goroutine
			}
			for r := range ch {
				var d net.Dialer
				c, err := d.DialContext(r.ctx, r.network, r.addr)
				r.res <- dialRes{c, err}
			}
		}()
		if err := <-ready; err != nil {
			delete(dialers, n.name)
			dialersMu.Unlock()
			return nil, fmt.Errorf("entering %s: %w", n.name, err)
		}
	}
	dialersMu.Unlock()
	res := make(chan dialRes, 1)
	select {
	case ch <- dialReq{ctx, network, addr, res}:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r := <-res
	return r.c, r.err
}

type dialReq struct {
	ctx           context.Context
	network, addr string
	res           chan dialRes
}

type dialRes struct {
	c   net.Conn
	err error
}

var (
	dialersMu sync.Mutex
	dialers   = map[string]chan dialReq{}
)

// network is the run's namespaces: the control plane's (which holds the
// bridge) and one per node.
type network struct {
	prefix string
	cp     netNS
	nodes  []netNS
}

// sweep deletes namespaces, links and cgroups of earlier runs whose
// process is gone.
func sweep(t *testing.T) {
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) == 0 || !strings.HasPrefix(f[0], "k8s-") {
			continue
		}
		parts := strings.Split(f[0], "-")
		if len(parts) < 3 {
			continue
		}
		pid, err := strconv.Atoi(parts[1])
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue
		}
		t.Logf("removing namespace %s of a dead run", f[0])
		_ = run("ip", "netns", "del", f[0])
	}
	// And the node cgroups of runs killed before their cleanup (empty
	// once their processes are gone).
	for _, sub := range append(cgroupSubsystems, "unified") {
		dirs, _ := filepath.Glob(filepath.Join("/sys/fs/cgroup", sub, "k8s-*-n*"))
		for _, d := range dirs {
			parts := strings.Split(filepath.Base(d), "-")
			if pid, err := strconv.Atoi(parts[1]); err == nil && syscall.Kill(pid, 0) != nil {
				removeCgroupTree(d)
			}
		}
	}
}

var networkSeq atomic.Int64

func newNetwork(t *testing.T, nodes int) *network {
	t.Helper()
	sweep(t)
	// Names are unique per network, not only per process: a dialer
	// thread stays in the namespace it entered (see DialContext), so a
	// second test of the same process reusing a name would dial into the
	// first test's deleted namespace.
	id := fmt.Sprintf("%d-%d", os.Getpid(), networkSeq.Add(1))
	n := &network{prefix: "k8s-" + id, cp: netNS{"k8s-" + id + "-cp"}}
	must(t, "ip", "netns", "add", n.cp.name)
	t.Cleanup(func() { _ = run("ip", "netns", "del", n.cp.name) })
	ctx := context.Background()
	cpx := func(args ...string) {
		t.Helper()
		if _, err := n.cp.exec(ctx, args...); err != nil {
			t.Fatal(err)
		}
	}
	cpx("ip", "link", "set", "lo", "up")
	cpx("ip", "link", "add", "k8sbr0", "type", "bridge")
	cpx("ip", "addr", "add", cpIP+"/24", "dev", "k8sbr0")
	cpx("ip", "link", "set", "k8sbr0", "up")
	for i := range nodes {
		ns := netNS{fmt.Sprintf("k8s-%s-n%d", id, i+1)}
		must(t, "ip", "netns", "add", ns.name)
		t.Cleanup(func() { _ = run("ip", "netns", "del", ns.name) })
		// veth names are at most 15 bytes: k8s<pid%1e6>n<i>.
		host := fmt.Sprintf("k8s%dn%d", os.Getpid()%1000000, i+1)
		must(t, "ip", "link", "add", host, "netns", ns.name, "type", "veth", "peer", "name", host+"b", "netns", n.cp.name)
		cpx("ip", "link", "set", host+"b", "master", "k8sbr0", "up")
		nx := func(args ...string) {
			t.Helper()
			if _, err := ns.exec(ctx, args...); err != nil {
				t.Fatal(err)
			}
		}
		nx("ip", "link", "set", "lo", "up")
		nx("ip", "link", "set", host, "name", "eth0")
		nx("ip", "addr", "add", nodeIP(i)+"/24", "dev", "eth0")
		nx("ip", "link", "set", "eth0", "up")
		// A route for Service IPs, as a real node's default route gives:
		// without one, a host-network process's connect to a ClusterIP
		// fails before kube-proxy's DNAT is consulted. The control plane's
		// namespace has no route out, so nothing leaves the test's network.
		nx("ip", "route", "add", serviceCIDR, "via", cpIP)
		nx("sysctl", "-w", "net.ipv4.ip_forward=1")
		nx("sysctl", "-w", "net.ipv4.conf.all.route_localnet=1")
		n.nodes = append(n.nodes, ns)
	}
	// Pod networks: each node routes its own /24 on its CNI bridge; the
	// others reach it through that node.
	for i, ns := range n.nodes {
		cpx("ip", "route", "add", podCIDR(i), "via", nodeIP(i))
		for j := range n.nodes {
			if j != i {
				if _, err := ns.exec(ctx, "ip", "route", "add", podCIDR(j), "via", nodeIP(j)); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return n
}

// pki is the cluster's certificates, made fresh per run.
type pki struct {
	dir    string
	caKey  *ecdsa.PrivateKey
	caCert *x509.Certificate
}

func newPKI(t *testing.T, dir string) *pki {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shoal-k8s-test-ca"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	p := &pki{dir: dir, caKey: key, caCert: cert}
	writePEM(t, filepath.Join(dir, "ca.crt"), "CERTIFICATE", der)
	// The service account signing key.
	sa, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := x509.MarshalECPrivateKey(sa)
	writePEM(t, filepath.Join(dir, "sa.key"), "EC PRIVATE KEY", b)
	pub, _ := x509.MarshalPKIXPublicKey(&sa.PublicKey)
	writePEM(t, filepath.Join(dir, "sa.pub"), "PUBLIC KEY", pub)
	return p
}

func writePEM(t *testing.T, path, typ string, der []byte) {
	t.Helper()
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
}

// issue writes name.crt and name.key: a client certificate for cn/orgs, and
// a server one too when ips or dns are given.
func (p *pki) issue(t *testing.T, name, cn string, orgs []string, ips []string, dns []string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: orgs},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth, x509.ExtKeyUsageServerAuth},
		DNSNames:     dns,
	}
	for _, ip := range ips {
		tmpl.IPAddresses = append(tmpl.IPAddresses, net.ParseIP(ip))
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, p.caCert, &key.PublicKey, p.caKey)
	if err != nil {
		t.Fatal(err)
	}
	writePEM(t, filepath.Join(p.dir, name+".crt"), "CERTIFICATE", der)
	b, _ := x509.MarshalECPrivateKey(key)
	writePEM(t, filepath.Join(p.dir, name+".key"), "EC PRIVATE KEY", b)
}

// kubeconfig writes name.kubeconfig for the certificate name.
func (p *pki) kubeconfig(t *testing.T, name string) string {
	t.Helper()
	path := filepath.Join(p.dir, name+".kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: shoal-test
  cluster:
    server: https://%[1]s:6443
    certificate-authority: %[2]s/ca.crt
users:
- name: %[3]s
  user:
    client-certificate: %[2]s/%[3]s.crt
    client-key: %[2]s/%[3]s.key
contexts:
- name: default
  context: {cluster: shoal-test, user: %[3]s}
current-context: default
`, cpIP, p.dir, name)
	if err := os.WriteFile(path, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// cluster is the running Kubernetes.
type cluster struct {
	t     *testing.T
	tl    tools
	net   *network
	dir   string
	pki   *pki
	admin string // admin kubeconfig
	nodes []*node
	// runtimeOnly starts only each node's containerd (TestNodeRuntime).
	runtimeOnly bool
}

// node is one node's containerd, kubelet and kube-proxy, sharing a mount
// namespace in which the node's own directories are bound over the paths
// Kubernetes and the chart use.
type node struct {
	name          string
	ns            netNS
	dir           string
	sock          string
	cgroup        string
	proc          *testenv.Process
	proxy         *testenv.Process
	hostDirs      map[string]string // path on the node → directory of the test
	kubeletConfig string
}

// runtimePid finds the node's containerd, whose mount namespace is the
// node's (the kubelet's too).
func (n *node) runtimePid() (int, error) {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		args := strings.Split(string(b), "\x00")
		if strings.HasSuffix(args[0], "/containerd") && strings.Contains(string(b), n.sock) {
			return strconv.Atoi(filepath.Base(filepath.Dir(p)))
		}
	}
	return 0, fmt.Errorf("%s: containerd not running", n.name)
}

// cgroupSubsystems are this host's cgroup v1 hierarchies.
var cgroupSubsystems = []string{"pids", "memory", "cpu", "cpuacct", "cpuset", "blkio", "devices", "freezer", "systemd"}

// The paths each node gets a private copy of.
var nodePaths = []string{"/etc/containerd", "/var/lib/kubelet", "/var/lib/shoal", "/var/log/pods", "/var/log/containers", "/var/lib/cni"}

func (c *cluster) start(nodes int) {
	t := c.t
	t.Helper()
	c.net = newNetwork(t, nodes)
	c.pki = newPKI(t, mkdir(t, c.dir, "pki"))
	c.pki.issue(t, "apiserver", "kube-apiserver", nil,
		[]string{cpIP, "10.96.0.1", "127.0.0.1"},
		[]string{"kubernetes", "kubernetes.default", "kubernetes.default.svc", "kubernetes.default.svc.cluster.local"})
	c.pki.issue(t, "admin", "shoal-test-admin", []string{"system:masters"}, nil, nil)
	c.pki.issue(t, "controller-manager", "system:kube-controller-manager", nil, nil, nil)
	c.pki.issue(t, "scheduler", "system:kube-scheduler", nil, nil, nil)
	c.pki.issue(t, "kube-proxy", "system:kube-proxy", nil, nil, nil)
	c.admin = c.pki.kubeconfig(t, "admin")
	ctx := context.Background()

	etcdDir := mkdir(t, c.dir, "etcd")
	etcd := c.startIn(c.net.cp, "etcd", c.tl.etcd, "--data-dir", etcdDir,
		"--listen-client-urls", "http://127.0.0.1:2379", "--advertise-client-urls", "http://127.0.0.1:2379",
		"--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
		"--initial-cluster", "default=http://127.0.0.1:2380", "--log-level", "warn")
	waitFor(t, etcd, "etcd", 60*time.Second, func() error {
		return tcpUp(ctx, c.net.cp, "127.0.0.1:2379")
	})
	p := c.pki.dir
	api := c.startIn(c.net.cp, "kube-apiserver", filepath.Join(c.tl.k8sDir, "kube-apiserver"),
		"--etcd-servers=http://127.0.0.1:2379",
		"--advertise-address="+cpIP, "--bind-address=0.0.0.0", "--secure-port=6443",
		"--service-cluster-ip-range="+serviceCIDR,
		"--client-ca-file="+p+"/ca.crt",
		"--tls-cert-file="+p+"/apiserver.crt", "--tls-private-key-file="+p+"/apiserver.key",
		"--kubelet-client-certificate="+p+"/admin.crt", "--kubelet-client-key="+p+"/admin.key",
		// Node names resolve nowhere here: logs and exec go to the IP.
		"--kubelet-preferred-address-types=InternalIP",
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file="+p+"/sa.pub", "--service-account-signing-key-file="+p+"/sa.key",
		"--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
		"--allow-privileged=true", "--feature-gates=ImageVolume=true",
		"--v=1")
	waitFor(t, api, "kube-apiserver", 120*time.Second, func() error {
		_, err := c.kubectl(ctx, "get", "--raw", "/readyz")
		return err
	})
	c.startIn(c.net.cp, "kube-controller-manager", filepath.Join(c.tl.k8sDir, "kube-controller-manager"),
		"--kubeconfig="+c.pki.kubeconfig(t, "controller-manager"),
		"--authentication-kubeconfig="+c.pki.kubeconfig(t, "controller-manager"),
		"--authorization-kubeconfig="+c.pki.kubeconfig(t, "controller-manager"),
		"--bind-address=127.0.0.1", "--use-service-account-credentials=true",
		"--service-account-private-key-file="+p+"/sa.key", "--root-ca-file="+p+"/ca.crt",
		"--controllers=*,-csrsigning", "--v=1")
	c.startIn(c.net.cp, "kube-scheduler", filepath.Join(c.tl.k8sDir, "kube-scheduler"),
		"--kubeconfig="+c.pki.kubeconfig(t, "scheduler"),
		"--authentication-kubeconfig="+c.pki.kubeconfig(t, "scheduler"),
		"--authorization-kubeconfig="+c.pki.kubeconfig(t, "scheduler"),
		"--bind-address=127.0.0.1", "--v=1")

	// CoreDNS: the cluster's names (the chart's Services) for pods and for
	// the agents (host network, dnsPolicy ClusterFirstWithHostNet).
	corefile := writeFile(t, c.dir, "Corefile", fmt.Sprintf(`.:53 {
    bind %s
    errors
    kubernetes cluster.local in-addr.arpa ip6.arpa {
        kubeconfig %s default
        pods insecure
    }
    cache 5
}
`, cpIP, c.admin))
	c.startIn(c.net.cp, "coredns", c.tl.coredns, "-conf", corefile)

	c.startBootstrapRegistry(ctx)
	// RBAC the kubelets' client certs (system:node:<name>, system:nodes)
	// get from the Node authorizer; kube-proxy's from its default role.
	for i := range nodes {
		name := fmt.Sprintf("k8s-n%d", i+1)
		c.pki.issue(t, "kubelet-"+name, "system:node:"+name, []string{"system:nodes"}, nil, nil)
	}
}

// startBootstrapRegistry runs the registry of the images the cluster needs
// before Shoal runs (pause, Shoal's image, busybox).
func (c *cluster) startBootstrapRegistry(ctx context.Context) {
	t := c.t
	t.Helper()
	regCfg := writeFile(t, c.dir, "bootstrap-registry.yml", fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http: {addr: "%s:%d"}
storage: {filesystem: {rootdirectory: %q}}
`, cpIP, bootstrapPort, mkdir(t, c.dir, "bootstrap-registry")))
	reg := c.startIn(c.net.cp, "bootstrap registry", c.tl.registry, "serve", regCfg)
	waitFor(t, reg, "bootstrap registry", 30*time.Second, func() error {
		return tcpUp(ctx, c.net.cp, fmt.Sprintf("%s:%d", cpIP, bootstrapPort))
	})
}

// startNodes starts each node's containerd, kubelet and kube-proxy; pause
// is the sandbox image (in the bootstrap registry by then).
func (c *cluster) startNodes(pause string) {
	t := c.t
	t.Helper()
	ctx := context.Background()
	for i, ns := range c.net.nodes {
		n := &node{name: fmt.Sprintf("k8s-n%d", i+1), ns: ns, dir: mkdir(t, c.dir, fmt.Sprintf("n%d", i+1)), hostDirs: map[string]string{}}
		n.cgroup = fmt.Sprintf("/%s-n%d", c.net.prefix, i+1)
		// The kubelet refuses a cgroup root that does not exist.
		for _, sub := range cgroupSubsystems {
			d := filepath.Join("/sys/fs/cgroup", sub, n.cgroup)
			if err := os.MkdirAll(d, 0o755); err != nil {
				t.Fatalf("cgroup %s: %v", d, err)
			}
			if sub == "cpuset" {
				for _, f := range []string{"cpuset.cpus", "cpuset.mems"} {
					b, _ := os.ReadFile(filepath.Join("/sys/fs/cgroup/cpuset", f))
					_ = os.WriteFile(filepath.Join(d, f), b, 0o644)
				}
			}
		}
		n.sock = filepath.Join(n.dir, "containerd.sock")
		for _, p := range nodePaths {
			n.hostDirs[p] = mkdir(t, n.dir, "root"+strings.ReplaceAll(p, "/", "_"))
		}
		etc := n.hostDirs["/etc/containerd"]
		cniConf := mkdir(t, n.dir, "cni-conf")
		// containerd reads hosts.toml from /etc/containerd/certs.d, which
		// is this node's own directory inside its mount namespace.
		writeFile(t, etc, "config.toml", fmt.Sprintf(`version = 3
root = %q
state = %q
[grpc]
  address = %q
[plugins.'io.containerd.cri.v1.images']
  snapshotter = "overlayfs"
  [plugins.'io.containerd.cri.v1.images'.pinned_images]
    sandbox = %q
  [plugins.'io.containerd.cri.v1.images'.registry]
    config_path = "/etc/containerd/certs.d"
[plugins.'io.containerd.cri.v1.runtime']
  # This machine withholds CAP_SYS_RESOURCE: a container's oom_score_adj
  # may not go below containerd's own (the CRI asks -998 for sandboxes).
  restrict_oom_score_adj = true
  # Pods' network namespaces under the node's state directory, not the
  # machine's /run/netns, where each would leave a file behind.
  netns_mounts_under_state_dir = true
  [plugins.'io.containerd.cri.v1.runtime'.cni]
    bin_dirs = [%q]
    conf_dir = %q
  [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.runc.options]
      BinaryName = %q
      SystemdCgroup = false
`, filepath.Join(n.dir, "containerd-root"), filepath.Join(n.dir, "containerd-state"), n.sock, pause, c.tl.cniDir, cniConf, c.tl.runc))
		// The bootstrap registry is plain HTTP.
		bdir := mkdir(t, etc, "certs.d", fmt.Sprintf("%s:%d", cpIP, bootstrapPort))
		writeFile(t, bdir, "hosts.toml", fmt.Sprintf("server = \"http://%s:%d\"\n[host.\"http://%s:%d\"]\n  capabilities = [\"pull\", \"resolve\"]\n", cpIP, bootstrapPort, cpIP, bootstrapPort))
		writeFile(t, cniConf, "10-bridge.conflist", fmt.Sprintf(`{
  "cniVersion": "1.0.0",
  "name": "k8s-pods",
  "plugins": [
    {"type": "bridge", "bridge": "cni0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": %q}]], "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
`, podCIDR(i)))
		resolv := writeFile(t, n.dir, "resolv.conf", "nameserver "+cpIP+"\nsearch cluster.local\n")
		kcfg := writeFile(t, n.dir, "kubelet.yaml", fmt.Sprintf(`apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: %q
cgroupsPerQOS: true
enforceNodeAllocatable: [pods]
containerRuntimeEndpoint: unix://%s
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: false}
  x509: {clientCAFile: %s/ca.crt}
authorization: {mode: AlwaysAllow}
clusterDNS: [%s]
clusterDomain: cluster.local
resolvConf: %s
failSwapOn: false
serializeImagePulls: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "50Mi", nodefs.available: "1%%", imagefs.available: "1%%", nodefs.inodesFree: "1%%"}
healthzPort: 0
readOnlyPort: 0
port: 10250
address: %s
featureGates: {ImageVolume: true}
podPidsLimit: -1
protectKernelDefaults: true
localStorageCapacityIsolation: true
`, n.cgroup, n.sock, c.pki.dir, cpIP, resolv, nodeIP(i)))
		n.kubeletConfig = kcfg
		kubeconfig := c.pki.kubeconfig(t, "kubelet-"+n.name)
		// One shell per node: bind the node's directories, then run
		// containerd and the kubelet in that mount namespace, so that what
		// the kubelet mounts (secrets, projected tokens) containerd sees.
		var script strings.Builder
		script.WriteString("set -e\n")
		for _, p := range nodePaths {
			fmt.Fprintf(&script, "mkdir -p %s && mount --bind %s %s\n", p, n.hostDirs[p], p)
		}
		// The kubelet wants vm.overcommit_memory=1, kernel.panic=10 and
		// kernel.panic_on_oops=1, which are not per namespace: it would
		// change them for the whole machine. This node's mount namespace
		// shows it those values instead, and protectKernelDefaults makes
		// it fail rather than write if that did not take.
		for _, k := range []struct{ path, value string }{
			{"/proc/sys/vm/overcommit_memory", "1"}, {"/proc/sys/kernel/panic", "10"}, {"/proc/sys/kernel/panic_on_oops", "1"},
		} {
			f := writeFile(t, n.dir, "sysctl-"+filepath.Base(k.path), k.value+"\n")
			fmt.Fprintf(&script, "mount --bind -o ro %s %s\n", f, k.path)
		}
		// --address repeats the config's, so the node's containerd (and
		// with it the node's mount namespace) can be told by its command line.
		if c.runtimeOnly {
			fmt.Fprintf(&script, "exec %s --config /etc/containerd/config.toml --address %s --log-level warn\n", c.tl.containerd, n.sock)
		}
		fmt.Fprintf(&script, "%s --config /etc/containerd/config.toml --address %s --log-level warn &\n", c.tl.containerd, n.sock)
		fmt.Fprintf(&script, "for i in $(seq 100); do [ -S %s ] && break; sleep 0.2; done\n", n.sock)
		fmt.Fprintf(&script, "exec %s --config=%s --kubeconfig=%s --hostname-override=%s --node-ip=%s --cert-dir=%s --v=1\n",
			filepath.Join(c.tl.k8sDir, "kubelet"), kcfg, kubeconfig, n.name, nodeIP(i), mkdir(t, n.dir, "kubelet-pki"))
		n.proc = testenv.Start(t, n.name+" containerd+kubelet", "nsenter",
			[]string{"--net=" + ns.path(), "--", "unshare", "--mount", "--propagation", "slave", "--", "sh", "-c", script.String()},
			"PATH="+filepath.Dir(c.tl.shim)+":"+filepath.Dir(c.tl.containerd)+":/usr/sbin:/usr/bin:/sbin:/bin")
		c.nodes = append(c.nodes, n)
		t.Cleanup(func() { c.cleanupNode(n) })
		waitFor(t, n.proc, n.name+"'s containerd", 60*time.Second, func() error {
			if _, err := n.runtimePid(); err != nil {
				return err
			}
			_, err := os.Stat(n.sock)
			return err
		})
		if c.runtimeOnly {
			continue
		}
		n.proxy = c.startIn(ns, n.name+" kube-proxy", filepath.Join(c.tl.k8sDir, "kube-proxy"),
			"--kubeconfig="+c.pki.kubeconfig(t, "kube-proxy"), "--hostname-override="+n.name,
			"--cluster-cidr="+clusterCIDR, "--proxy-mode=iptables", "--masquerade-all=true",
			"--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established=0", "--conntrack-tcp-timeout-close-wait=0",
			// Fixed ports (port 0 fails its validation), on the node's own
			// loopback.
			"--bind-address="+nodeIP(i), "--metrics-bind-address=127.0.0.1:10249",
			"--healthz-bind-address=127.0.0.1:10256", "--v=1")
		waitFor(t, n.proxy, n.name+" kube-proxy", 60*time.Second, func() error {
			return tcpUp(ctx, ns, "127.0.0.1:10256")
		})
	}
	if c.runtimeOnly {
		return
	}
	// kube-proxy's and CoreDNS's permissions come with the built-in roles.
	if _, err := c.kubectl(ctx, "create", "clusterrolebinding", "shoal-test-kube-proxy", "--clusterrole=system:node-proxier", "--user=system:kube-proxy"); err != nil {
		t.Fatal(err)
	}
	for _, n := range c.nodes {
		waitFor(t, n.proc, n.name+" to be Ready", 180*time.Second, func() error {
			out, err := c.kubectl(ctx, "get", "node", n.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if err != nil {
				return err
			}
			if strings.TrimSpace(out) != "True" {
				return fmt.Errorf("Ready=%q", out)
			}
			return nil
		})
	}
}

// cleanupNode ends what the node's runtime left: container processes live
// in their shims' process groups, so they are found by the node's cgroup.
func (c *cluster) cleanupNode(n *node) {
	// First the orderly way, while containerd still runs (this cleanup
	// runs before the node's processes are stopped): every sandbox
	// stopped and removed, which also deletes its CNI network namespace.
	if c.tl.crictl != "" {
		cfg := filepath.Join(n.dir, "crictl-cleanup.yaml")
		if os.WriteFile(cfg, []byte(fmt.Sprintf("runtime-endpoint: unix://%s\ntimeout: 30\n", n.sock)), 0o644) == nil {
			ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
			_, _ = c.nodeExec(ctx, n, c.tl.crictl, "--config", cfg, "rmp", "--all", "--force")
			cancel()
		}
	}
	for _, sub := range []string{"pids", "memory", "cpu"} {
		root := filepath.Join("/sys/fs/cgroup", sub, n.cgroup)
		_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
			if err != nil || !info.IsDir() {
				return nil
			}
			b, _ := os.ReadFile(filepath.Join(p, "cgroup.procs"))
			for _, f := range strings.Fields(string(b)) {
				if pid, err := strconv.Atoi(f); err == nil {
					_ = syscall.Kill(pid, syscall.SIGKILL)
				}
			}
			return nil
		})
	}
	// The shims (one per pod) carry the node's containerd socket in their
	// command line.
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		b, _ := os.ReadFile(p)
		if strings.Contains(string(b), "containerd-shim") && strings.Contains(string(b), n.sock) {
			if pid, err := strconv.Atoi(filepath.Base(filepath.Dir(p))); err == nil {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
	}
	time.Sleep(500 * time.Millisecond)
	// runc also makes each container's cgroup in the v2 hierarchy this
	// host mounts beside the v1 ones.
	for _, sub := range append(cgroupSubsystems, "unified") {
		removeCgroupTree(filepath.Join("/sys/fs/cgroup", sub, n.cgroup))
	}
}

func removeCgroupTree(root string) {
	var dirs []string
	_ = filepath.Walk(root, func(p string, info os.FileInfo, err error) error {
		if err == nil && info.IsDir() {
			dirs = append(dirs, p)
		}
		return nil
	})
	for i := len(dirs) - 1; i >= 0; i-- {
		_ = os.Remove(dirs[i])
	}
}

// startIn runs a program in a namespace for the rest of the test.
func (c *cluster) startIn(ns netNS, name, bin string, args ...string) *testenv.Process {
	return testenv.Start(c.t, name, "nsenter", append([]string{"--net=" + ns.path(), "--", bin}, args...))
}

// kubectl runs kubectl as the cluster admin from the control plane's
// namespace.
func (c *cluster) kubectl(ctx context.Context, args ...string) (string, error) {
	return c.net.cp.exec(ctx, append([]string{c.tl.kubectl, "--kubeconfig", c.admin}, args...)...)
}

// helm runs helm likewise.
func (c *cluster) helm(ctx context.Context, args ...string) (string, error) {
	return c.net.cp.exec(ctx, append([]string{c.tl.helm, "--kubeconfig", c.admin}, args...)...)
}

// nodeExec runs a command in a node's namespaces (network and the mount
// namespace of its kubelet, where the node's own directories are bound).
func (c *cluster) nodeExec(ctx context.Context, n *node, args ...string) (string, error) {
	pid, err := n.runtimePid()
	if err != nil {
		return "", err
	}
	full := append([]string{"--target", strconv.Itoa(pid), "--mount", "--net", "--"}, args...)
	out, err := exec.CommandContext(ctx, "nsenter", full...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s (on %s): %v: %s", strings.Join(args, " "), n.name, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

func waitFor(t *testing.T, p *testenv.Process, what string, timeout time.Duration, ready func() error) {
	t.Helper()
	testenv.WaitFor(t, p, what, timeout, ready)
}

func mkdir(t *testing.T, parts ...string) string {
	t.Helper()
	p := filepath.Join(parts...)
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// tcpUp is nil once addr accepts connections from inside ns.
func tcpUp(ctx context.Context, ns netNS, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	return c.Close()
}
