package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/testenv"
)

// nsPrefix marks every namespace the harness creates; a run's own
// namespaces are nsPrefix-<pid>-*. Leftovers of crashed runs are swept.
const nsPrefix = "shoal-"

// subnet is the private /24 used only inside the harness's namespaces.
const subnet = "10.213.0"

// Link shapes one host's veth in both directions.
type Link struct {
	RateMbit int           // 0: unshaped
	Delay    time.Duration // one-way added delay per direction (netem); 0: none
}

// Host is one network namespace attached to the cluster's bridge.
type Host struct {
	Name string // namespace name
	IP   string
	Dev  string // veth inside the host namespace
	peer string // veth end in the switch namespace

	dials chan dialReq
}

// Net is the set of namespaces of one run.
type Net struct {
	t      *testing.T
	prefix string
	sw     string
	Hosts  []*Host
	Link   Link
	n      int
}

var (
	liveMu sync.Mutex
	liveNS = map[string]bool{}
)

func run(args ...string) error {
	out, err := exec.Command(args[0], args[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// requireNetns skips unless the test can create namespaces.
func requireNetns(t *testing.T) {
	t.Helper()
	if os.Getenv("SHOAL_E2E") != "1" {
		t.Skip("e2e: set SHOAL_E2E=1 (make e2e / make bench-e2e) to bring up the namespace cluster")
	}
	if runtime.GOOS != "linux" {
		t.Skip("e2e: needs Linux network namespaces")
	}
	if os.Geteuid() != 0 {
		t.Skip("e2e: needs root (network namespaces, veth, tc); run `sudo make e2e`")
	}
	for _, bin := range []string{"ip", "tc"} {
		if _, err := exec.LookPath(bin); err != nil {
			t.Skipf("e2e: %s not installed (iproute2); `make deps` installs it", bin)
		}
	}
	if err := exec.Command("ip", "netns", "list").Run(); err != nil {
		t.Skipf("e2e: `ip netns` unavailable: %v", err)
	}
}

// listNS returns the names of all named network namespaces.
func listNS() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w", err)
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// sweep deletes namespaces left by earlier runs of this harness whose
// process is gone (a crashed or killed `go test`).
func sweep(t *testing.T) {
	names, err := listNS()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range names {
		if !strings.HasPrefix(n, nsPrefix) {
			continue
		}
		var pid int
		if _, err := fmt.Sscanf(strings.TrimPrefix(n, nsPrefix), "%d-", &pid); err != nil {
			continue
		}
		if pid == os.Getpid() || unix.Kill(pid, 0) == nil {
			continue // a live run (ours or another engineer's)
		}
		killNSProcs(n)
		if err := run("ip", "netns", "del", n); err != nil {
			t.Errorf("sweep: %v", err)
		} else {
			t.Logf("sweep: removed leftover namespace %s", n)
		}
	}
}

// killNSProcs kills every process still inside namespace ns.
func killNSProcs(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscanf(f, "%d", &pid); err == nil && pid > 1 && pid != os.Getpid() {
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}
}

func addNS(t *testing.T, name string) {
	t.Helper()
	if err := run("ip", "netns", "add", name); err != nil {
		t.Fatal(err)
	}
	liveMu.Lock()
	liveNS[name] = true
	liveMu.Unlock()
}

func delNS(name string) error {
	killNSProcs(name)
	err := run("ip", "netns", "del", name)
	liveMu.Lock()
	delete(liveNS, name)
	liveMu.Unlock()
	return err
}

// cleanupAllNS deletes every namespace this process created (signal path).
func cleanupAllNS() {
	liveMu.Lock()
	names := make([]string, 0, len(liveNS))
	for n := range liveNS {
		names = append(names, n)
	}
	liveMu.Unlock()
	for _, n := range names {
		_ = delNS(n)
	}
}

// newNet creates a switch namespace with a bridge and hosts namespaces
// attached to it, addresses subnet.(10+i), every veth shaped per link.
// Everything is deleted when the test ends.
func newNet(t *testing.T, hosts int, link Link) *Net {
	t.Helper()
	requireNetns(t)
	sweep(t)
	if hosts > 200 {
		t.Fatalf("at most 200 hosts in %s.0/24", subnet)
	}
	n := &Net{t: t, prefix: fmt.Sprintf("%s%d-%d", nsPrefix, os.Getpid(), nextRun()), Link: link}
	n.sw = n.prefix + "-sw"
	t.Cleanup(n.teardown)
	addNS(t, n.sw)
	must(t, run("ip", "-n", n.sw, "link", "add", "br0", "type", "bridge"))
	must(t, run("ip", "-n", n.sw, "link", "set", "br0", "up"))
	for i := 0; i < hosts; i++ {
		n.AddHost()
	}
	return n
}

var (
	runMu  sync.Mutex
	runSeq int
)

func nextRun() int {
	runMu.Lock()
	defer runMu.Unlock()
	runSeq++
	return runSeq
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// AddHost creates one more host namespace on the bridge.
func (n *Net) AddHost() *Host {
	t := n.t
	t.Helper()
	i := n.n
	n.n++
	h := &Host{Name: fmt.Sprintf("%s-h%d", n.prefix, i), IP: fmt.Sprintf("%s.%d", subnet, 10+i), Dev: "eth0", peer: fmt.Sprintf("v%d", i)}
	addNS(t, h.Name)
	must(t, run("ip", "-n", n.sw, "link", "add", h.peer, "type", "veth", "peer", "name", h.Dev, "netns", h.Name))
	must(t, run("ip", "-n", n.sw, "link", "set", h.peer, "master", "br0", "up"))
	must(t, run("ip", "-n", h.Name, "link", "set", "lo", "up"))
	must(t, run("ip", "-n", h.Name, "addr", "add", h.IP+"/24", "dev", h.Dev))
	must(t, run("ip", "-n", h.Name, "link", "set", h.Dev, "up"))
	// Egress of the host (its uplink) and egress of the switch port (its
	// downlink).
	must(t, shape(h.Name, h.Dev, n.Link))
	must(t, shape(n.sw, h.peer, n.Link))
	h.startDialer(t)
	n.Hosts = append(n.Hosts, h)
	return h
}

// netemAvailable reports whether the kernel has sch_netem (delay), probed on
// the loopback of a scratch namespace.
func netemAvailable(t *testing.T) error {
	t.Helper()
	ns := fmt.Sprintf("%s%d-probe%d", nsPrefix, os.Getpid(), nextRun())
	addNS(t, ns)
	defer func() {
		if err := delNS(ns); err != nil {
			t.Error(err)
		}
	}()
	return run("tc", "-n", ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms")
}

// shape puts a token bucket (and optionally netem delay under it) on dev.
func shape(ns, dev string, l Link) error {
	if l.RateMbit <= 0 && l.Delay <= 0 {
		return nil
	}
	parent := []string{"root"}
	if l.RateMbit > 0 {
		// Burst: at least a 64 KiB GSO super-packet plus margin; ~1 ms of
		// traffic at high rates.
		burst := max(128<<10, l.RateMbit*1e6/8/1000)
		if err := run("tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf",
			"rate", fmt.Sprintf("%dmbit", l.RateMbit), "burst", fmt.Sprint(burst), "latency", "50ms"); err != nil {
			return err
		}
		parent = []string{"parent", "1:1"}
	}
	if l.Delay > 0 {
		args := append([]string{"tc", "-n", ns, "qdisc", "add", "dev", dev}, parent...)
		args = append(args, "handle", "10:", "netem", "delay", fmt.Sprintf("%dms", l.Delay.Milliseconds()), "limit", "100000")
		if err := run(args...); err != nil {
			return fmt.Errorf("netem (kernel module sch_netem needed for delay): %w", err)
		}
	}
	return nil
}

func (n *Net) teardown() {
	var names []string
	for _, h := range n.Hosts {
		names = append(names, h.Name)
	}
	names = append(names, n.sw)
	for _, name := range names {
		if err := delNS(name); err != nil {
			n.t.Errorf("teardown: %v", err)
		}
	}
	all, err := listNS()
	if err != nil {
		n.t.Error(err)
		return
	}
	for _, name := range all {
		if strings.HasPrefix(name, n.prefix+"-") {
			n.t.Errorf("teardown: namespace %s left over", name)
		}
	}
}

// TxBytes is the byte count the host sent on its veth.
func (h *Host) TxBytes(t *testing.T) int64 {
	t.Helper()
	out, err := exec.Command("ip", "-n", h.Name, "-s", "-j", "link", "show", "dev", h.Dev).Output()
	if err != nil {
		t.Fatalf("ip -s link in %s: %v", h.Name, err)
	}
	var links []struct {
		Stats64 struct {
			TX struct {
				Bytes int64 `json:"bytes"`
			} `json:"tx"`
		} `json:"stats64"`
	}
	if err := json.Unmarshal(out, &links); err != nil || len(links) != 1 {
		t.Fatalf("ip -s -j link: %v: %s", err, out)
	}
	return links[0].Stats64.TX.Bytes
}

// Start runs bin with args inside the host's namespace.
func (h *Host) Start(t *testing.T, name, bin string, args ...string) *testenv.Process {
	t.Helper()
	return testenv.Start(t, name, "ip", append([]string{"netns", "exec", h.Name, bin}, args...))
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

// startDialer starts a goroutine locked to an OS thread that has joined the
// host's namespace; it serves dials for the test process. The thread never
// exits (a thread leaving would fire Pdeathsig on children it forked), so
// the runtime never reuses it outside the namespace.
func (h *Host) startDialer(t *testing.T) {
	t.Helper()
	h.dials = make(chan dialReq)
	ready := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		fd, err := unix.Open(filepath.Join("/var/run/netns", h.Name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			ready <- fmt.Errorf("open netns %s: %w", h.Name, err)
			select {}
		}
		err = unix.Setns(fd, unix.CLONE_NEWNET)
		unix.Close(fd)
		if err != nil {
			ready <- fmt.Errorf("setns %s: %w", h.Name, err)
			select {}
		}
		ready <- nil
		d := net.Dialer{Timeout: 5 * time.Second}
		for r := range h.dials {
			c, err := d.DialContext(r.ctx, r.network, r.addr)
			r.res <- dialRes{c, err}
		}
		select {} // keep the thread locked forever
	}()
	must(t, <-ready)
}

// DialContext connects from inside the host's namespace.
func (h *Host) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	r := dialReq{ctx: ctx, network: network, addr: addr, res: make(chan dialRes, 1)}
	select {
	case h.dials <- r:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	res := <-r.res
	return res.c, res.err
}

// Transport is an HTTP transport whose connections start in the host's
// namespace.
func (h *Host) Transport() *http.Transport {
	return &http.Transport{
		DialContext:         h.DialContext,
		MaxIdleConnsPerHost: 16,
		DisableCompression:  true,
		IdleConnTimeout:     30 * time.Second,
	}
}

// WaitTCP polls addr from inside the host until it accepts connections.
func (h *Host) WaitTCP(t *testing.T, p *testenv.Process, addr string, timeout time.Duration) {
	t.Helper()
	testenv.WaitFor(t, p, fmt.Sprintf("%s (in %s) to accept connections", addr, h.Name), timeout, func() error {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		c, err := h.DialContext(ctx, "tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// WaitHTTP polls url from inside the host until it answers below 500.
func (h *Host) WaitHTTP(t *testing.T, p *testenv.Process, url string, timeout time.Duration) {
	t.Helper()
	c := &http.Client{Transport: h.Transport(), Timeout: 2 * time.Second}
	testenv.WaitFor(t, p, fmt.Sprintf("%s (in %s) to answer", url, h.Name), timeout, func() error {
		return testenv.HTTPAnswers(context.Background(), c, url)
	})
}
