// Command trackerload measures a running tracker's announce throughput and
// latency from a separate process, over loopback HTTP, with the load of a
// large cluster: agents x swarms peers, each agent announcing every swarm
// (signed as a cluster member when -join-secret is given). It runs against
// one or more trackers in turn (e.g. a baseline build and this one, memory
// and Redis stores) and writes the results side by side, with ratios to the
// first target measured in the same run, as JSON and Markdown.
//
// Phases per target: fill (every agent announces every swarm once,
// event=started), steady (closed loop for -duration: as fast as the tracker
// answers, -concurrency requests in flight) and rated (open loop at -rate
// announces/s for -duration; latency counted from each request's scheduled
// time, so queueing shows). Memory per swarm entry is read before and after
// fill: Redis's used_memory (-redis name=addr) or the tracker's Go heap
// (its /metrics). With -debug name=URL the tracker's CPU profile over the
// steady phase is saved under -out/profiles.
//
// It is a module of its own (tools/trackerload) so nothing of it enters the
// shoal binary's module.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/announce"
	"github.com/shoalproject/shoal/internal/token"
)

type multi []string

func (t *multi) String() string     { return strings.Join(*t, ",") }
func (t *multi) Set(v string) error { *t = append(*t, v); return nil }

func named(vs multi) map[string]string {
	m := map[string]string{}
	for _, v := range vs {
		k, val, ok := strings.Cut(v, "=")
		if !ok {
			logrus.Fatalf("trackerload: %q: want name=value", v)
		}
		m[k] = val
	}
	return m
}

// Phase is one phase's figures.
type Phase struct {
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"announces_per_second"`
	P50ms     float64 `json:"p50_ms"`
	P90ms     float64 `json:"p90_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	// AvgPeersBack is the mean peers per answer.
	AvgPeersBack float64 `json:"avg_peers_returned"`
	// LoadAvg is the 1-minute load average when the phase ended: the
	// machine is shared, so figures are only comparable at similar load.
	LoadAvg string `json:"loadavg_1m"`
	// TrackerCPUus and RedisCPUus are the CPU time the tracker process
	// (its process_cpu_seconds_total) and its Redis (INFO cpu) spent per
	// announce answered: on a shared machine throughput follows the CPU a
	// process is given, CPU per announce does not.
	TrackerCPUus float64 `json:"tracker_cpu_us_per_announce"`
	RedisCPUus   float64 `json:"redis_cpu_us_per_announce,omitempty"`
}

// cpuMeter reads a target's CPU counters around a phase.
type cpuMeter struct{ base, redis string }

func (m cpuMeter) read() (tracker, rds float64) {
	if resp, err := http.Get(m.base + "/metrics"); err == nil {
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			if v, ok := strings.CutPrefix(sc.Text(), "process_cpu_seconds_total "); ok {
				tracker, _ = strconv.ParseFloat(v, 64)
			}
		}
		resp.Body.Close()
	}
	if m.redis != "" {
		if info, err := redisInfo(m.redis, "cpu"); err == nil {
			for _, k := range []string{"used_cpu_sys:", "used_cpu_user:"} {
				if v, ok := info[k]; ok {
					f, _ := strconv.ParseFloat(v, 64)
					rds += f
				}
			}
		}
	}
	return tracker, rds
}

// measure runs phase and adds the CPU per announce.
func (m cpuMeter) measure(phase func() Phase) Phase {
	t0, r0 := m.read()
	p := phase()
	t1, r1 := m.read()
	if n := float64(p.Requests - p.Errors); n > 0 {
		p.TrackerCPUus = (t1 - t0) / n * 1e6
		if m.redis != "" {
			p.RedisCPUus = (r1 - r0) / n * 1e6
		}
	}
	return p
}

// Result is one target's figures.
type Result struct {
	Target string `json:"target"`
	URL    string `json:"url"`
	Fill   Phase  `json:"fill"`
	Steady Phase  `json:"steady"`
	Rated  *Phase `json:"rated,omitempty"`
	// BytesPerEntry is the store's memory growth over fill divided by the
	// entries fill made (0: not measured).
	BytesPerEntry float64 `json:"bytes_per_entry"`
	MemorySource  string  `json:"memory_source,omitempty"`
	Profile       string  `json:"cpu_profile,omitempty"`
	// CommandStats is where Redis's INFO commandstats over the steady
	// phase was saved.
	CommandStats string `json:"redis_commandstats,omitempty"`
}

// Report is the whole run.
type Report struct {
	Date        string   `json:"date"`
	Host        string   `json:"host"`
	CPUs        int      `json:"cpus"`
	Agents      int      `json:"agents"`
	Swarms      int      `json:"swarms"`
	Numwant     int      `json:"numwant"`
	Concurrency int      `json:"concurrency"`
	Signed      bool     `json:"signed"`
	Duration    string   `json:"phase_duration"`
	Rate        int      `json:"rate"`
	Results     []Result `json:"results"`
}

type workload struct {
	ihPart   []string // per swarm: token and info_hash
	peerPart []string // per agent: peer_id, port, left, numwant
	signers  []*announce.Signer
}

func main() {
	var tg, debug, redisAddr multi
	secret := flag.String("secret", "", "tracker secret, to sign announce tokens")
	joinSecret := flag.String("join-secret", "", "cluster join secret: announces are signed as members node-N (empty: unsigned)")
	agents := flag.Int("agents", 10000, "agents (peers per swarm)")
	swarms := flag.Int("swarms", 20, "swarms every agent announces")
	numwant := flag.Int("numwant", 50, "numwant sent with each announce")
	conc := flag.Int("concurrency", 32, "concurrent keep-alive connections")
	dur := flag.Duration("duration", 15*time.Second, "length of the steady and rated phases")
	rate := flag.Int("rate", 20000, "announces/s of the rated phase (0: no rated phase)")
	out := flag.String("out", "bench/results", "directory for the results")
	name := flag.String("name", "tracker", "results file name (NAME.json, NAME.md)")
	flag.Var(&tg, "target", "name=base URL of a running tracker (repeatable; the first is the ratios' base)")
	flag.Var(&debug, "debug", "name=base URL of a target's debug (pprof) listener, to profile the steady phase")
	flag.Var(&redisAddr, "redis", "name=host:port of a target's Redis, for memory per entry")
	flag.Parse()
	if *secret == "" || len(tg) == 0 {
		logrus.Fatal("trackerload: -secret and at least one -target are required")
	}
	keys, err := token.NewKeys(*secret)
	if err != nil {
		logrus.WithError(err).Fatal("trackerload")
	}
	// Every query fragment is built up front so the generator spends its
	// CPU on requests, not on encoding.
	var w workload
	exp := time.Now().Add(24 * time.Hour)
	for i := 0; i < *swarms; i++ {
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		h := sha1.Sum(seed[:])
		w.ihPart = append(w.ihPart, "token="+url.QueryEscape(keys.Sign(token.PurposeAnnounce, h[:], exp))+"&info_hash="+url.QueryEscape(string(h[:])))
	}
	for a := 0; a < *agents; a++ {
		left := "1048576"
		if a%10 == 0 {
			left = "0"
		}
		w.peerPart = append(w.peerPart, fmt.Sprintf("&peer_id=%s&port=%d&left=%s&numwant=%d&compact=1",
			url.QueryEscape(fmt.Sprintf("-LG0001-%012d", a)), 10000+a%50000, left, *numwant))
		if *joinSecret != "" {
			s, err := announce.NewSigner(*joinSecret, fmt.Sprintf("node-%05d", a))
			if err != nil {
				logrus.WithError(err).Fatal("trackerload")
			}
			w.signers = append(w.signers, s)
		}
	}
	dbg, rds := named(debug), named(redisAddr)
	host, _ := os.Hostname()
	rep := Report{Date: time.Now().UTC().Format(time.RFC3339), Host: host, CPUs: runtime.NumCPU(),
		Agents: *agents, Swarms: *swarms, Numwant: *numwant, Concurrency: *conc, Signed: *joinSecret != "",
		Duration: dur.String(), Rate: *rate}
	for _, t := range tg {
		tname, base, ok := strings.Cut(t, "=")
		if !ok {
			logrus.Fatalf("trackerload: target %q: want name=url", t)
		}
		base = strings.TrimRight(base, "/")
		r := Result{Target: tname, URL: base}
		cpu := cpuMeter{base: base, redis: rds[tname]}
		before, src := memory(base, dbg[tname], rds[tname])
		r.Fill = cpu.measure(func() Phase { return w.run(base, *conc, phaseFill, 0, 0) })
		logPhase(tname, "fill", r.Fill)
		if after, _ := memory(base, dbg[tname], rds[tname]); before > 0 && after > 0 {
			r.BytesPerEntry = float64(after-before) / float64(*agents**swarms)
			r.MemorySource = src
		}
		if a := rds[tname]; a != "" {
			// Per-command cost over the steady phase (calls, usec_per_call;
			// commands a script runs are counted too) beside the profile.
			if err := redisCommand(a, "CONFIG", "RESETSTAT"); err != nil {
				logrus.WithError(err).Warn("redis CONFIG RESETSTAT")
			}
		}
		var prof chan string
		if d := dbg[tname]; d != "" {
			prof = make(chan string, 1)
			go func() { prof <- profile(d, *dur-time.Second, filepath.Join(*out, "profiles"), *name+"-"+tname) }()
		}
		r.Steady = cpu.measure(func() Phase { return w.run(base, *conc, phaseSteady, *dur, 0) })
		logPhase(tname, "steady", r.Steady)
		if prof != nil {
			r.Profile = <-prof
		}
		if a := rds[tname]; a != "" {
			r.CommandStats = saveCommandStats(a, filepath.Join(*out, "profiles"), *name+"-"+tname)
		}
		if *rate > 0 {
			p := cpu.measure(func() Phase { return w.run(base, *conc*4, phaseRated, *dur, *rate) })
			logPhase(tname, "rated", p)
			r.Rated = &p
		}
		rep.Results = append(rep.Results, r)
	}
	if err := write(*out, *name, rep); err != nil {
		logrus.WithError(err).Fatal("trackerload: write results")
	}
}

func logPhase(target, phase string, p Phase) {
	logrus.WithFields(logrus.Fields{"target": target, "phase": phase, "req": p.Requests, "errors": p.Errors,
		"per_s": int(p.PerSecond), "p50_ms": p.P50ms, "p99_ms": p.P99ms, "load": p.LoadAvg}).Info("phase done")
}

type phaseKind int

const (
	phaseFill phaseKind = iota
	phaseSteady
	phaseRated
)

// run drives one phase. Fill announces every (agent, swarm) pair once,
// agent-major so all swarms grow together; steady and rated re-announce the
// pairs round robin.
func (w *workload) run(base string, conc int, kind phaseKind, dur time.Duration, rate int) Phase {
	tr := &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	pairs := int64(len(w.ihPart) * len(w.peerPart))
	var next, errs, peersBack atomic.Int64
	ctx := context.Background()
	if kind != phaseFill {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, dur)
		defer cancel()
	}
	event := "&event=started"
	if kind != phaseFill {
		event = ""
	}
	start := time.Now()
	var interval time.Duration
	if rate > 0 {
		interval = time.Second / time.Duration(rate)
	}
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	for c := 0; c < conc; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			var buf bytes.Buffer
			for ctx.Err() == nil {
				n := next.Add(1) - 1
				if kind == phaseFill && n >= pairs {
					return
				}
				t0 := time.Now()
				if interval > 0 {
					// Open loop: request n is due at start + n*interval,
					// whether or not earlier ones were answered.
					t0 = start.Add(time.Duration(n) * interval)
					if d := time.Until(t0); d > 0 {
						select {
						case <-time.After(d):
						case <-ctx.Done():
							return
						}
					}
				}
				n %= pairs
				a, s := int(n)/len(w.ihPart), int(n)%len(w.ihPart)
				req, _ := http.NewRequest(http.MethodGet, base+"/announce?"+w.ihPart[s]+w.peerPart[a]+event, nil)
				if w.signers != nil {
					_ = w.signers[a].Sign(req)
				}
				resp, err := hc.Do(req)
				if err != nil {
					if ctx.Err() == nil {
						errs.Add(1)
					}
					continue
				}
				buf.Reset()
				_, err = buf.ReadFrom(resp.Body)
				resp.Body.Close()
				lat[c] = append(lat[c], time.Since(t0))
				body := buf.Bytes()
				if err != nil || resp.StatusCode != 200 || bytes.Contains(body, []byte("failure reason")) {
					if errs.Add(1) == 1 {
						logrus.WithField("body", string(body)).Warn("first failed announce")
					}
					continue
				}
				peersBack.Add(int64(compactPeers(body)))
			}
		}(c)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000
	}
	p := Phase{Requests: int64(len(all)), Errors: errs.Load(), Seconds: elapsed.Seconds(),
		P50ms: pct(.50), P90ms: pct(.90), P99ms: pct(.99), MaxMs: pct(1)}
	p.PerSecond = float64(p.Requests) / p.Seconds
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		p.LoadAvg, _, _ = strings.Cut(string(b), " ")
	}
	if ok := p.Requests - p.Errors; ok > 0 {
		p.AvgPeersBack = float64(peersBack.Load()) / float64(ok)
	}
	return p
}

// compactPeers counts the IPv4 peers of a compact answer: "5:peers<len>:"
// then 6 bytes each.
func compactPeers(body []byte) int {
	k := bytes.Index(body, []byte("5:peers"))
	if k < 0 {
		return 0
	}
	rest := body[k+7:]
	c := bytes.IndexByte(rest, ':')
	if c <= 0 {
		return 0
	}
	l, err := strconv.Atoi(string(rest[:c]))
	if err != nil {
		return 0
	}
	return l / 6
}

// memory is the store's current size in bytes: Redis's used_memory when the
// target has a Redis, else the tracker's Go heap in use after a GC (forced
// through the debug listener when there is one).
func memory(base, debug, redisAddr string) (int64, string) {
	if redisAddr != "" {
		v, err := redisUsedMemory(redisAddr)
		if err != nil {
			logrus.WithError(err).Warn("redis used_memory")
			return 0, ""
		}
		return v, "redis used_memory"
	}
	if debug != "" {
		if resp, err := http.Get(debug + "/debug/pprof/heap?gc=1"); err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return 0, ""
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_memstats_heap_inuse_bytes "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			return int64(f), "tracker go heap in use"
		}
	}
	return 0, ""
}

// redisUsedMemory is INFO memory's used_memory.
func redisUsedMemory(addr string) (int64, error) {
	info, err := redisInfo(addr, "memory")
	if err != nil {
		return 0, err
	}
	v, ok := info["used_memory:"]
	if !ok {
		return 0, fmt.Errorf("no used_memory in INFO")
	}
	return strconv.ParseInt(v, 10, 64)
}

// redisCommand sends one command and reads a simple-string or error reply.
func redisCommand(addr string, args ...string) error {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return err
	}
	l, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(l, "+") {
		return fmt.Errorf("redis %s: %s", args[0], strings.TrimSpace(l))
	}
	return nil
}

// saveCommandStats writes INFO commandstats, one command a line, sorted by
// total time, and returns the file's path ("" on failure).
func saveCommandStats(addr, dir, name string) string {
	info, err := redisInfo(addr, "commandstats")
	if err != nil {
		logrus.WithError(err).Warn("redis INFO commandstats")
		return ""
	}
	type stat struct {
		line string
		usec float64
	}
	var stats []stat
	for k, v := range info {
		if !strings.HasPrefix(k, "cmdstat_") {
			continue
		}
		var st stat
		st.line = strings.TrimSuffix(strings.TrimPrefix(k, "cmdstat_"), ":") + " " + v
		for _, f := range strings.Split(v, ",") {
			if u, ok := strings.CutPrefix(f, "usec="); ok {
				st.usec, _ = strconv.ParseFloat(u, 64)
			}
		}
		stats = append(stats, st)
	}
	slices.SortFunc(stats, func(a, b stat) int { return int(b.usec - a.usec) })
	var b strings.Builder
	for _, st := range stats {
		b.WriteString(st.line + "\n")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ""
	}
	path := filepath.Join(dir, name+"-commandstats.txt")
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		return ""
	}
	return path
}

// redisInfo speaks just enough RESP for INFO section: "key:" -> value.
func redisInfo(addr, section string) (map[string]string, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "INFO "+section+"\r\n"); err != nil {
		return nil, err
	}
	r := bufio.NewReader(c)
	hdr, err := r.ReadString('\n')
	if err != nil || !strings.HasPrefix(hdr, "$") {
		return nil, fmt.Errorf("INFO reply %q: %v", hdr, err)
	}
	n, _ := strconv.Atoi(strings.TrimSpace(hdr[1:]))
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, l := range strings.Split(string(body), "\r\n") {
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k+":"] = v
		}
	}
	return out, nil
}

// profile saves a CPU profile of seconds from a debug listener.
func profile(debug string, d time.Duration, dir, name string) string {
	if d < time.Second {
		d = time.Second
	}
	resp, err := http.Get(fmt.Sprintf("%s/debug/pprof/profile?seconds=%d", debug, int(d.Seconds())))
	if err != nil {
		logrus.WithError(err).Warn("cpu profile")
		return ""
	}
	defer resp.Body.Close()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return ""
	}
	path := filepath.Join(dir, name+".pprof")
	f, err := os.Create(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	if _, err := io.Copy(f, resp.Body); err != nil {
		return ""
	}
	return path
}

func write(dir, name string, rep Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, name+".json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	signed := "unsigned"
	if rep.Signed {
		signed = "signed as cluster members"
	}
	fmt.Fprintf(&b, "# Tracker announce benchmark\n\n%s on %s (%d CPUs), `tools/trackerload` in a separate process over loopback HTTP.\n\n", rep.Date, rep.Host, rep.CPUs)
	fmt.Fprintf(&b, "%d agents x %d swarms (%d peer entries), numwant=%d, announces %s. Phases: fill (each pair once, event=started, %d connections), steady (closed loop, %d connections, %s), rated (open loop at %d/s, %s; latency from each request's scheduled time). ",
		rep.Agents, rep.Swarms, rep.Agents*rep.Swarms, rep.Numwant, signed, rep.Concurrency, rep.Concurrency, rep.Duration, rep.Rate, rep.Duration)
	b.WriteString("The trackers, their Redis and the load generator share the machine's CPUs with whatever else runs: compare the ratios (to the first target, same run), not absolute numbers across runs; on a busy machine throughput follows the CPU share a process gets, and CPU per announce (tracker: process_cpu_seconds_total; Redis: INFO cpu) is the steadier figure.\n\n")
	b.WriteString("| target | phase | announces | errors | announces/s | ratio | p50 ms | p90 ms | p99 ms | p99 ratio | max ms | tracker CPU µs/announce | ratio | Redis CPU µs/announce | ratio | avg peers returned | load avg (1m) |\n")
	b.WriteString("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	ratio := func(a, base float64) string {
		if base == 0 {
			return "-"
		}
		return fmt.Sprintf("%.2f", a/base)
	}
	first := rep.Results[0]
	for _, r := range rep.Results {
		rows := []struct {
			name    string
			p, base *Phase
		}{{"fill", &r.Fill, &first.Fill}, {"steady", &r.Steady, &first.Steady}, {"rated", r.Rated, first.Rated}}
		for _, row := range rows {
			if row.p == nil {
				continue
			}
			p := *row.p
			br, bp, bt, brd := "-", "-", "-", "-"
			if row.base != nil {
				br, bp = ratio(p.PerSecond, row.base.PerSecond), ratio(p.P99ms, row.base.P99ms)
				bt, brd = ratio(p.TrackerCPUus, row.base.TrackerCPUus), ratio(p.RedisCPUus, row.base.RedisCPUus)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %d | %.0f | %s | %.2f | %.2f | %.2f | %s | %.1f | %.1f | %s | %.1f | %s | %.1f | %s |\n",
				r.Target, row.name, p.Requests, p.Errors, p.PerSecond, br, p.P50ms, p.P90ms, p.P99ms, bp, p.MaxMs,
				p.TrackerCPUus, bt, p.RedisCPUus, brd, p.AvgPeersBack, p.LoadAvg)
		}
	}
	b.WriteString("\n| target | bytes per swarm entry | measured as |\n|---|---:|---|\n")
	for _, r := range rep.Results {
		fmt.Fprintf(&b, "| %s | %.0f | %s |\n", r.Target, r.BytesPerEntry, r.MemorySource)
	}
	return os.WriteFile(filepath.Join(dir, name+".md"), []byte(b.String()), 0o644)
}
