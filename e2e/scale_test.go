package e2e

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

var (
	scale         = flag.Bool("scale", false, "run TestScale (make bench-scale)")
	scaleN        = flag.String("scale.n", "32,64,128", "TestScale: node counts")
	scaleMiB      = flag.Int("scale.mib", 64, "TestScale: image size in MiB (4 layers)")
	scaleRate     = flag.Int("scale.mbit", 10, "TestScale: link rate (Mbit/s) of every host, the registry's included")
	scaleOut      = flag.String("scale.out", "scale", "TestScale: results/<name>.{json,md}")
	scaleIdle     = flag.Duration("scale.idle", 60*time.Second, "TestScale: how long the idle agents are measured (0: not measured)")
	scaleIdleN    = flag.Int("scale.idle.n", 128, "TestScale: agents up for the idle measurement")
	scaleProfile  = flag.String("scale.pprof", "", "TestScale: directory for CPU profiles of agents, tracker and registry taken during each rollout (empty: no debug listeners)")
	scaleProfAgts = flag.Int("scale.pprof.agents", 3, "TestScale: how many agents are profiled per rollout")
	scaleProfSecs = flag.Int("scale.pprof.secs", 0, "TestScale: profile length in seconds (0: 1.5 T* + 5 s)")
	// The default floor (5 s) is four piece-times at 1 MiB/s per layer. On
	// 10 Mbit/s links four layers arriving at once get a piece of a layer
	// every ~3.4 s at best, and a relayed piece (a quarter of an uplink per
	// upload slot) takes as long: 20 s is four such piece-times and a half,
	// what an operator of such a network sets (configs/agent.yml).
	scaleStall = flag.Duration("scale.stall", 20*time.Second, "TestScale: the agents' p2p.stallTimeout")
)

// clkTck is the kernel's USER_HZ, the unit of /proc/<pid>/stat times: 100
// on every Linux architecture Go supports here.
const clkTck = 100

// ScaleRun is one TestScale cell: the rollout's Run and what it cost.
type ScaleRun struct {
	Run
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	// Completion times as ratios to T*.
	P50VsTStar float64 `json:"p50OverTStar"`
	P90VsTStar float64 `json:"p90OverTStar"`
	P99VsTStar float64 `json:"p99OverTStar"`
	// HostIdle is the host's idle share (idle + iowait of all CPUs) over
	// the rollout, from /proc/stat; LoadBefore is the 1-minute load
	// average when it started. Other users of the machine count.
	HostIdle   float64 `json:"hostIdle"`
	HostCPUs   int     `json:"hostCPUs"`
	LoadBefore float64 `json:"loadAvgBefore"`
	// CPU-seconds (user + system, /proc/<pid>/stat) over the rollout.
	AgentCPU []float64 `json:"agentCPUSeconds"`
	// AgentSwitches: each agent's context switches over the rollout,
	// voluntary (it waited: a read, a timer, a lock) and not, summed over
	// its threads. The off-CPU side of what an agent costs: every wakeup
	// is a switch in and out, whatever it then does.
	AgentSwitches []int64 `json:"agentContextSwitches"`
	TrackerCPU    float64 `json:"trackerCPUSeconds"`
	RegistryCPU   float64 `json:"registryCPUSeconds"`
	TestCPU       float64 `json:"testProcessCPUSeconds"` // the pulling clients' sha256 checks
	HostBusyCPU   float64 `json:"hostBusyCPUSeconds"`    // everything, kernel softirq and other users included
	// ShoalCPUPerGiB: agents + tracker + registry CPU-seconds per GiB
	// delivered to the nodes (N × image).
	ShoalCPUPerGiB float64 `json:"shoalCPUSecondsPerGiB"`
	// Per-agent resident memory at the end of the rollout and its peak
	// (VmRSS, VmHWM, bytes), and of it the private part (RssAnon: the
	// binary's pages, RssFile, are shared by every agent of the host).
	AgentRSS  []int64  `json:"agentRSSBytes"`
	AgentPeak []int64  `json:"agentPeakRSSBytes"`
	AgentAnon []int64  `json:"agentAnonRSSBytes"`
	Profiles  []string `json:"profiles,omitempty"`
}

// IdleRun is the cost of agents with nothing to pull.
type IdleRun struct {
	What      string    `json:"what"`
	N         int       `json:"nodes"`
	Seconds   float64   `json:"seconds"`
	AgentCPU  []float64 `json:"agentCPUSeconds"`
	AgentRSS  []int64   `json:"agentRSSBytes"`
	AgentAnon []int64   `json:"agentAnonRSSBytes"`
	MeanAnon  int64     `json:"meanAnonRSSBytes"`
	MaxAnon   int64     `json:"maxAnonRSSBytes"`
	CorePct   float64   `json:"meanCorePercent"`
	MaxPct    float64   `json:"maxCorePercent"`
	MeanRSS   int64     `json:"meanRSSBytes"`
	MaxRSS    int64     `json:"maxRSSBytes"`
	HostIdle  float64   `json:"hostIdle"`
	LoadStart float64   `json:"loadAvgBefore"`
}

// ScaleReport is results/<name>.json of TestScale.
type ScaleReport struct {
	Runs []ScaleRun `json:"runs"`
	Idle []IdleRun  `json:"idle"`
}

// TestScale runs cold rollouts of one image to 32, 64 and 128 real agents
// (make bench-scale) and records, per cell, every node's completion time,
// registry egress, bytes between nodes, the host's idle CPU and every
// Shoal process's CPU and memory; then the cost of idle agents. Only with
// -scale.
func TestScale(t *testing.T) {
	if !*scale {
		t.Skip("scale benchmark: run with -args -scale (make bench-scale)")
	}
	ns := parseInts(t, *scaleN)
	maxN := 0
	if *scaleIdle > 0 {
		maxN = max(*scaleIdleN, 0)
	}
	for _, n := range ns {
		maxN = max(maxN, n)
	}
	c := newClusterDebug(t, maxN, Link{RateMbit: *scaleRate}, false, *scaleProfile != "")
	c.StallTimeout = *scaleStall
	var rep ScaleReport
	save := func() {
		// Written after every cell so an interrupted run keeps its data.
		if err := writeScaleReport(*scaleOut, rep); err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range ns {
		repo := fmt.Sprintf("e2e/scale-%dmib-n%d", *scaleMiB, n)
		img, size := c.seedImage(t, repo, int64(*scaleMiB)<<20, 4)
		c.StartAgents(n)
		// Let start-up work (certificates, first heartbeats) pass.
		time.Sleep(3 * time.Second)
		r := c.measuredRollout(t, rolloutSpec{Scenario: "cold", Mode: "p2p", Repo: repo, Img: img, Size: size, Nodes: firstN(n)})
		rep.Runs = append(rep.Runs, r)
		save()
		if n == maxN && *scaleIdle > 0 {
			// The same agents with their torrents seeding: the peer wire
			// of every layer kept open, announces, heartbeats.
			rep.Idle = append(rep.Idle, c.measureIdle(t, "seeding the image just pulled (peer connections open)", n, *scaleIdle))
			save()
		}
		c.StopAgents()
	}
	if *scaleIdle > 0 && *scaleIdleN > 0 {
		c.StartAgents(*scaleIdleN)
		time.Sleep(5 * time.Second)
		rep.Idle = append(rep.Idle, c.measureIdle(t, "freshly started, nothing pulled", *scaleIdleN, *scaleIdle))
		save()
		c.StopAgents()
	}
	t.Logf("\n%s", scaleMarkdown(rep))
}

// cpuSnap is what measuredRollout samples before and after.
type cpuSnap struct {
	total, idle uint64 // /proc/stat jiffies, all CPUs
	agents      []float64
	switches    []int64 // the agents' context switches
	tracker     float64
	registry    float64
	self        float64
}

func (c *Cluster) cpuSnap(t *testing.T, n int) cpuSnap {
	t.Helper()
	var s cpuSnap
	s.total, s.idle = hostCPU(t)
	s.agents, s.switches = make([]float64, n), make([]int64, n)
	for i := range n {
		pid := c.agentPid(t, i)
		s.agents[i], s.switches[i] = procCPUSeconds(pid), procSwitches(pid)
	}
	s.tracker, s.registry = procCPUSeconds(c.infraPid(t, "tracker")), procCPUSeconds(c.infraPid(t, "registry"))
	s.self = procCPUSeconds(os.Getpid())
	return s
}

func (c *Cluster) measuredRollout(t *testing.T, spec rolloutSpec) ScaleRun {
	t.Helper()
	n := len(spec.Nodes)
	load := loadAvg()
	var profWG sync.WaitGroup
	var profiles []string
	var profMu sync.Mutex
	if *scaleProfile != "" {
		// The bulk of a rollout is about T*: profile somewhat longer.
		bps := float64(c.Net.Link.RateMbit) * 1e6 / 8
		secs := *scaleProfSecs
		if secs <= 0 {
			secs = int(1.5*tStar(float64(spec.Size), n, bps, bps, bps)) + 5
		}
		targets := []struct {
			name string
			h    *Host
			port int
		}{{"tracker", c.Infra, debugPort}, {"registry", c.Infra, registryDebugPort}}
		for i := range min(*scaleProfAgts, n) {
			targets = append(targets, struct {
				name string
				h    *Host
				port int
			}{fmt.Sprintf("agent%d", i), c.Nodes[i], debugPort})
		}
		for _, tg := range targets {
			profWG.Add(1)
			go func() {
				defer profWG.Done()
				f := filepath.Join(*scaleProfile, fmt.Sprintf("n%d-%s.pprof", n, tg.name))
				if err := fetchProfile(tg.h, fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", tg.port, secs), f); err != nil {
					t.Logf("profile %s: %v", tg.name, err)
					return
				}
				profMu.Lock()
				profiles = append(profiles, f)
				profMu.Unlock()
			}()
		}
	}
	regMetrics := func() map[string]float64 { return scrape(t, c.Infra, "http://"+c.RegistryAddr()+"/metrics") }
	reg0 := regMetrics()
	before := c.cpuSnap(t, n)
	r := c.rollout(t, spec)
	after := c.cpuSnap(t, n)
	reg1 := regMetrics()
	profWG.Wait()
	// What left the registry by way: piece ranges (the nodes' shares and
	// solo fetches, counted as sent, whether the node kept them or not)
	// and the seeder's peer wire.
	regDelta := func(k string) int64 { return int64(reg1[k] - reg0[k]) }
	r.Note += fmt.Sprintf("registry sent: piece ranges %s in %d requests, seeder %s. ",
		mib(regDelta(`shoal_registry_piece_bytes_total{reader="file"}`)+regDelta(`shoal_registry_piece_bytes_total{reader="stream"}`)),
		regDelta(`shoal_registry_piece_requests_total{result="ok"}`), mib(regDelta("shoal_registry_seeder_uploaded_bytes_total")))
	s := ScaleRun{Run: r, LoadBefore: load, HostCPUs: hostCPUs(), Profiles: profiles}
	s.P90, s.P99 = percentile(r.Seconds, .9), percentile(r.Seconds, .99)
	if r.TStar > 0 {
		s.P50VsTStar, s.P90VsTStar, s.P99VsTStar = r.P50/r.TStar, s.P90/r.TStar, s.P99/r.TStar
	}
	if dt := after.total - before.total; dt > 0 {
		s.HostIdle = float64(after.idle-before.idle) / float64(dt)
		s.HostBusyCPU = float64(dt-(after.idle-before.idle)) / clkTck
	}
	var shoal float64
	for i := range n {
		d := after.agents[i] - before.agents[i]
		s.AgentCPU = append(s.AgentCPU, d)
		s.AgentSwitches = append(s.AgentSwitches, after.switches[i]-before.switches[i])
		shoal += d
		rss, peak, anon := procRSS(c.agentPid(t, i))
		s.AgentRSS, s.AgentPeak, s.AgentAnon = append(s.AgentRSS, rss), append(s.AgentPeak, peak), append(s.AgentAnon, anon)
	}
	s.TrackerCPU, s.RegistryCPU = after.tracker-before.tracker, after.registry-before.registry
	s.TestCPU = after.self - before.self
	shoal += s.TrackerCPU + s.RegistryCPU
	if gib := float64(n) * float64(r.ImageBytes) / (1 << 30); gib > 0 {
		s.ShoalCPUPerGiB = shoal / gib
	}
	t.Logf("N=%d: host idle %.0f%% (load before %.2f), Shoal %.1f CPU-s = %.2f CPU-s/GiB delivered, agents mean %.2f CPU-s and %d context switches, RSS mean %s peak max %s, private mean %s",
		n, 100*s.HostIdle, load, shoal, s.ShoalCPUPerGiB, mean(s.AgentCPU), mean(s.AgentSwitches), mib(mean(s.AgentRSS)), mib(maxInt(s.AgentPeak)), mib(mean(s.AgentAnon)))
	return s
}

// measureIdle samples the first n agents' CPU and memory over d.
func (c *Cluster) measureIdle(t *testing.T, what string, n int, d time.Duration) IdleRun {
	t.Helper()
	r := IdleRun{What: what, N: n, Seconds: d.Seconds(), LoadStart: loadAvg()}
	before := c.cpuSnap(t, n)
	time.Sleep(d)
	after := c.cpuSnap(t, n)
	if dt := after.total - before.total; dt > 0 {
		r.HostIdle = float64(after.idle-before.idle) / float64(dt)
	}
	var pcts []float64
	for i := range n {
		cpu := after.agents[i] - before.agents[i]
		rss, _, anon := procRSS(c.agentPid(t, i))
		r.AgentCPU, r.AgentRSS, r.AgentAnon = append(r.AgentCPU, cpu), append(r.AgentRSS, rss), append(r.AgentAnon, anon)
		pcts = append(pcts, 100*cpu/d.Seconds())
	}
	r.CorePct, r.MaxPct = mean(pcts), percentile(pcts, 1)
	r.MeanRSS, r.MaxRSS = mean(r.AgentRSS), maxInt(r.AgentRSS)
	r.MeanAnon, r.MaxAnon = mean(r.AgentAnon), maxInt(r.AgentAnon)
	t.Logf("idle (%s): %d agents over %s: %.3f%% of a core each (max %.3f%%), RSS mean %s max %s (private mean %s max %s), host idle %.0f%%",
		what, n, d, r.CorePct, r.MaxPct, mib(r.MeanRSS), mib(r.MaxRSS), mib(r.MeanAnon), mib(r.MaxAnon), 100*r.HostIdle)
	return r
}

// agentPid is node i's agent process (`ip netns exec` execs it in place).
func (c *Cluster) agentPid(t *testing.T, i int) int {
	t.Helper()
	return shoalPid(t, c.Nodes[i].Name, "agent")
}

func (c *Cluster) infraPid(t *testing.T, component string) int {
	t.Helper()
	return shoalPid(t, c.Infra.Name, component)
}

// shoalPid finds the `shoal <component>` process in namespace ns.
func shoalPid(t *testing.T, ns, component string) int {
	t.Helper()
	out, err := exec.Command("ip", "netns", "pids", ns).Output()
	if err != nil {
		t.Fatalf("ip netns pids %s: %v", ns, err)
	}
	for _, f := range strings.Fields(string(out)) {
		pid, err := strconv.Atoi(f)
		if err != nil {
			continue
		}
		cmd, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) > 1 && strings.HasPrefix(filepath.Base(args[0]), "shoal") && args[1] == component {
			return pid
		}
	}
	t.Fatalf("no shoal %s in %s", component, ns)
	return 0
}

// hostCPU is the jiffies of all CPUs, total and idle (idle + iowait).
func hostCPU(t *testing.T) (total, idle uint64) {
	t.Helper()
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	total, idle, err = parseProcStat(string(b))
	if err != nil {
		t.Fatal(err)
	}
	return total, idle
}

// parseProcStat reads the aggregate "cpu" line of /proc/stat. Guest time
// is already inside user and nice, so it is not added again.
func parseProcStat(s string) (total, idle uint64, err error) {
	line, _, _ := strings.Cut(s, "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, 0, fmt.Errorf("/proc/stat: unexpected first line %q", line)
	}
	for i, v := range f[1:min(len(f), 9)] { // user nice system idle iowait irq softirq steal
		x, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, 0, fmt.Errorf("/proc/stat: %q: %w", line, err)
		}
		total += x
		if i == 3 || i == 4 {
			idle += x
		}
	}
	return total, idle, nil
}

func hostCPUs() int {
	b, _ := os.ReadFile("/proc/stat")
	n := 0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "cpu") && !strings.HasPrefix(l, "cpu ") {
			n++
		}
	}
	return n
}

// procCPUSeconds is a process's user + system CPU time (0 if it is gone).
func procCPUSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	v, err := parsePidStat(string(b))
	if err != nil {
		return 0
	}
	return v
}

// parsePidStat returns utime + stime in seconds from /proc/<pid>/stat; the
// command name in parentheses may hold spaces, so fields count from its
// closing parenthesis.
func parsePidStat(s string) (float64, error) {
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/pid/stat: no command: %q", s)
	}
	f := strings.Fields(s[i+1:])
	// f[0] is field 3 (state); utime and stime are fields 14 and 15.
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/pid/stat: short: %q", s)
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/pid/stat: bad times: %q", s)
	}
	return float64(u+st) / clkTck, nil
}

// procSwitches is a process's context switches, voluntary and not, summed
// over its threads (0 if it is gone).
func procSwitches(pid int) int64 {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	var n int64
	for _, f := range tasks {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n += parseStatusCount(string(b), "voluntary_ctxt_switches:") + parseStatusCount(string(b), "nonvoluntary_ctxt_switches:")
	}
	return n
}

// procRSS is a process's VmRSS, VmHWM and RssAnon in bytes.
func procRSS(pid int) (rss, peak, anon int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0, 0
	}
	return parseStatusKB(string(b), "VmRSS:"), parseStatusKB(string(b), "VmHWM:"), parseStatusKB(string(b), "RssAnon:")
}

func parseStatusKB(s, key string) int64 { return parseStatusCount(s, key) << 10 }

// parseStatusCount is the number after key in a /proc status file.
func parseStatusCount(s, key string) int64 {
	for _, l := range strings.Split(s, "\n") {
		if rest, ok := strings.CutPrefix(l, key); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				v, _ := strconv.ParseInt(f[0], 10, 64)
				return v
			}
		}
	}
	return 0
}

func loadAvg() float64 {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return 0
	}
	v, _ := strconv.ParseFloat(f[0], 64)
	return v
}

func fetchProfile(h *Host, url, file string) error {
	if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
		return err
	}
	cl := &http.Client{Transport: h.Transport(), Timeout: 10 * time.Minute}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := cl.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
		return fmt.Errorf("%s: %s: %s", url, resp.Status, b)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	return os.WriteFile(file, b, 0o644)
}

func mean[T int64 | float64](xs []T) T {
	if len(xs) == 0 {
		return 0
	}
	var s T
	for _, x := range xs {
		s += x
	}
	return s / T(len(xs))
}

func maxInt(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

func writeScaleReport(name string, rep ScaleReport) error {
	dir := os.Getenv("SHOAL_E2E_RESULTS")
	if dir == "" {
		dir = "results"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	// The JSON is the runs array tools/e2eplot reads (every results/*.json
	// is one); the idle measurements go to idle/<name>.json.
	if err := writeJSON(filepath.Join(dir, name+".json"), rep.Runs); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Join(dir, "idle"), 0o755); err != nil {
		return err
	}
	if err := writeJSON(filepath.Join(dir, "idle", name+".json"), rep.Idle); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, name+".md"), []byte(scaleMarkdown(rep)), 0o644)
}

func scaleMarkdown(rep ScaleReport) string {
	var b strings.Builder
	b.WriteString("# Shoal at scale (TestScale)\n\n")
	b.WriteString("| N | image | link | T* s | p50 s | p90 s | p99 s | max s | p50/T* | p90/T* | p99/T* | max/T* | registry egress/image | node-to-node | host idle | Shoal CPU-s/GiB | agent CPU-s mean (max) | agent context switches mean | agent RSS mean (peak max) | agent private RSS mean | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range rep.Runs {
		var maxCPU float64
		for _, x := range r.AgentCPU {
			maxCPU = max(maxCPU, x)
		}
		fmt.Fprintf(&b, "| %d | %s | %d Mbit/s | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.2f | %.3f× | %s | %.0f %% (load %.1f before) | %.2f | %.2f (%.2f) | %d | %s (%s) | %s | %s |\n",
			r.N, mib(r.ImageBytes), r.RateMbit, r.TStar, r.P50, r.P90, r.P99, r.Max, r.P50VsTStar, r.P90VsTStar, r.P99VsTStar, r.VsTStar,
			r.EgressRatio, mib(r.PeerBytes), 100*r.HostIdle, r.LoadBefore, r.ShoalCPUPerGiB, mean(r.AgentCPU), maxCPU,
			mean(r.AgentSwitches), mib(mean(r.AgentRSS)), mib(maxInt(r.AgentPeak)), mib(mean(r.AgentAnon)), r.Note)
	}
	b.WriteString("\nEvery node's completion time is in scale.json (`seconds`); T* = max(F/u_s, F/d, N·F/(u_s+N·u)) with every link, the registry's included, at the rate shown. ")
	b.WriteString("Host idle: idle + iowait of all CPUs over the rollout (/proc/stat; other users of the machine included). ")
	b.WriteString("Shoal CPU-s/GiB: user + system time of every agent, the tracker and the registry over the rollout (/proc/<pid>/stat), per GiB delivered (N × image). Context switches: voluntary and involuntary, summed over an agent's threads (/proc/<pid>/task/*/status). ")
	b.WriteString("Registry egress: the registry host's veth tx bytes (headers and tracker replies included).\n")
	if len(rep.Idle) > 0 {
		b.WriteString("\n## Idle agents\n\n| agents | state | over | % of a core, mean (max) | RSS mean (max) | private RSS mean (max) | host idle |\n|---|---|---|---|---|---|---|\n")
		for _, r := range rep.Idle {
			fmt.Fprintf(&b, "| %d | %s | %.0f s | %.3f %% (%.3f %%) | %s (%s) | %s (%s) | %.0f %% |\n", r.N, r.What, r.Seconds, r.CorePct, r.MaxPct, mib(r.MeanRSS), mib(r.MaxRSS), mib(r.MeanAnon), mib(r.MaxAnon), 100*r.HostIdle)
		}
		b.WriteString("\nRSS is VmRSS; the private part is RssAnon (the shoal binary's pages, RssFile, are mapped once for every agent of the host).\n")
	}
	return b.String()
}

func writeJSON(path string, v any) error {
	js, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(js, '\n'), 0o644)
}
