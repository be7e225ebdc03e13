package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/sirupsen/logrus"
)

var (
	matrix      = flag.Bool("matrix", false, "run TestMatrix (make bench-e2e)")
	matrixN     = flag.String("matrix.n", "1,2,4,8,16,24", "TestMatrix: node counts")
	matrixSizes = flag.String("matrix.mib", "64,512", "TestMatrix: image sizes in MiB")
	matrixRate  = flag.Int("matrix.mbit", 200, "TestMatrix: link rate (Mbit/s) of every host")
	matrixDelay = flag.Duration("matrix.delay", 20*time.Millisecond, "TestMatrix: delay of the extra delayed run (0: none; needs sch_netem)")
	matrixDelN  = flag.Int("matrix.delay.n", 8, "TestMatrix: N of the delayed run")
	matrixName  = flag.String("matrix.out", "matrix", "TestMatrix: results/<name>.{json,md} (tools/e2eplot draws the charts)")
	// Direct pulls are link-bound (N·F through the registry's uplink: 4.0×
	// and 8.0× at N=4 and 8 in every run so far); at N=24 and 512 MiB one
	// cell alone takes 9 minutes, which breaks the 30-minute budget.
	matrixDirectMax = flag.Int64("matrix.direct.maxmib", 4096, "TestMatrix: skip direct cells moving more than this (N×image MiB); report N·F/u_s instead")
)

func TestMain(m *testing.M) {
	flag.Parse()
	// An interrupted run still removes its namespaces (delNS kills what runs
	// inside first; children also die by Pdeathsig when this process exits).
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-sig
		logrus.Warnf("e2e: %v: deleting namespaces", s)
		cleanupAllNS()
		os.Exit(2)
	}()
	code := m.Run()
	cleanupAllNS()
	os.Exit(code)
}

// seedImage generates an image and pushes it to the cluster's registry from
// the infra host (over its loopback: pushes do not count as egress).
func (c *Cluster) seedImage(t *testing.T, repo string, bytes int64, layers int) (v1.Image, int64) {
	t.Helper()
	img, err := genImage(repo, bytes, layers)
	if err != nil {
		t.Fatal(err)
	}
	size, err := imageSize(img)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	start := time.Now()
	if err := push(ctx, c.Infra.Transport(), c.RegistryAddr()+"/"+repo+":v1", img); err != nil {
		t.Fatalf("push %s: %v", repo, err)
	}
	t.Logf("pushed %s (%s) in %s", repo, mib(size), time.Since(start).Round(time.Millisecond))
	return img, size
}

// rolloutSpec is one rollout: the chosen nodes pull Repo at the same
// moment, through their agents (Mode p2p) or straight from the registry
// (direct). During, if set, runs concurrently (fault injection). Pull errors
// fail the test, except on nodes in MayFail (their own agent was killed).
type rolloutSpec struct {
	Scenario, Mode, Repo string
	Img                  v1.Image
	Size                 int64
	Nodes                []int
	During               func()
	MayFail              map[int]bool
	// Containerd pulls on these nodes with containerd (ctr) through the
	// agent instead of go-containerregistry (p2p mode only).
	Containerd map[int]*Containerd
}

func firstN(n int) []int {
	out := make([]int, n)
	for i := range out {
		out[i] = i
	}
	return out
}

func (c *Cluster) rollout(t *testing.T, s rolloutSpec) Run {
	t.Helper()
	nodes := len(s.Nodes)
	r := Run{Scenario: s.Scenario, Mode: s.Mode, N: nodes, ImageBytes: s.Size, RateMbit: c.Net.Link.RateMbit, DelayMs: c.Net.Link.Delay.Milliseconds()}
	var hosts []*Host
	for _, i := range s.Nodes {
		hosts = append(hosts, c.Nodes[i])
	}
	host := c.RegistryAddr()
	if s.Mode == "p2p" {
		host = mirrorAddr
	}
	// Metrics of every live agent by node: the pulling nodes' received bytes
	// and everyone's uploads (seeding nodes outside the rollout included).
	metrics := func() map[int]map[string]float64 {
		ms := map[int]map[string]float64{}
		for i, a := range c.Agents {
			if a != nil && !a.Exited() {
				ms[i] = scrape(t, c.Nodes[i], "http://"+mirrorAddr+"/metrics")
			}
		}
		return ms
	}
	var before map[int]map[string]float64
	if s.Mode == "p2p" {
		before = metrics()
	}
	egress0 := c.Infra.TxBytes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	secs := make([]float64, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	go0 := make(chan struct{})
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-go0
			start := time.Now()
			if cd := s.Containerd[s.Nodes[i]]; cd != nil && s.Mode == "p2p" {
				errs[i] = cd.Pull(ctx, c.RegistryAddr()+"/"+s.Repo+":v1", s.Img)
			} else {
				errs[i] = pull(ctx, h.Transport(), host+"/"+s.Repo+":v1", s.Img)
			}
			secs[i] = time.Since(start).Seconds()
		}()
	}
	close(go0)
	var hookDone chan struct{}
	if s.During != nil {
		hookDone = make(chan struct{})
		go func() { defer close(hookDone); s.During() }()
	}
	wg.Wait()
	if hookDone != nil {
		<-hookDone
	}
	r.RegistryEgress = c.Infra.TxBytes(t) - egress0
	for i, err := range errs {
		switch {
		case err == nil:
			r.Seconds = append(r.Seconds, secs[i])
		case s.MayFail[s.Nodes[i]]:
			t.Logf("%s/%s pull on node %d failed as its agent was killed: %v", s.Scenario, s.Mode, s.Nodes[i], err)
			r.Note += fmt.Sprintf("node %d (agent killed) failed after %.2fs. ", s.Nodes[i], secs[i])
		default:
			t.Errorf("%s/%s pull on node %d (%s): %v", s.Scenario, s.Mode, s.Nodes[i], hosts[i].Name, err)
		}
	}
	if s.Mode == "p2p" {
		after := metrics()
		// An agent killed during the rollout is not counted; one restarted
		// counts from zero.
		sum := func(nodes []int, k string) int64 {
			var d float64
			for _, i := range nodes {
				if a, ok := after[i]; ok {
					d += a[k] - before[i][k]
				}
			}
			return int64(d)
		}
		all := firstN(len(c.Agents))
		delta := func(k string) int64 { return sum(s.Nodes, k) }
		r.SwarmBytes = delta(`shoal_agent_blob_bytes_total{source="peer"}`)
		r.PeerBytes = sum(all, "shoal_agent_uploaded_bytes_total")
		r.AgentRegistryBytes = delta(`shoal_agent_blob_bytes_total{source="registry"}`)
		r.WastedBytes = delta(`shoal_agent_swarm_received_bytes_total{kind="all"}`) -
			delta(`shoal_agent_swarm_received_bytes_total{kind="useful"}`)
		var fb []string
		for _, reason := range []string{"solo", "stall", "deadline", "torrent_error", "no_torrent", "bad_torrent", "torrent_request_failed"} {
			if v := delta(`shoal_agent_fallbacks_total{reason="` + reason + `"}`); v > 0 {
				fb = append(fb, fmt.Sprintf("%s=%d", reason, v))
				if r.Fallbacks == nil {
					r.Fallbacks = map[string]int64{}
				}
				r.Fallbacks[reason] = v
			}
		}
		if len(fb) > 0 {
			r.Note += "agent fallbacks: " + strings.Join(fb, " ") + ". "
		}
		var why []string
		for _, w := range []string{"share", "alone", "steal", "solo"} {
			if v := delta(`shoal_agent_registry_piece_bytes_total{reason="` + w + `"}`); v > 0 {
				why = append(why, fmt.Sprintf("%s %s", w, mib(v)))
				if r.RegistryPieces == nil {
					r.RegistryPieces = map[string]int64{}
				}
				r.RegistryPieces[w] = v
			}
		}
		if len(why) > 0 {
			r.Note += "registry pieces: " + strings.Join(why, ", ") + ". "
		}
		r.DataAnswers = map[string]int64{}
		for _, a := range []string{"served", "busy", "refused"} {
			r.DataAnswers[a] = sum(all, `shoal_agent_data_answers_total{answer="`+a+`"}`)
		}
		r.DataConnections = sum(all, "shoal_agent_data_connections_total")
		r.Note += fmt.Sprintf("data path: %d served, %d busy, %d connections. ", r.DataAnswers["served"], r.DataAnswers["busy"], r.DataConnections)
		if mm := delta("shoal_agent_digest_mismatches_total"); mm > 0 {
			r.Note += fmt.Sprintf("%d agent-side digest mismatches (discarded). ", mm)
		}
	}
	r.finish()
	t.Logf("%s/%s N=%d %s: %sp50 %.2fs p95 %.2fs max %.2fs (T* %.2fs) registry egress %s (%.2f× image) swarm %s (wasted %s) node-to-node %s agent-HTTP %s",
		s.Scenario, s.Mode, nodes, mib(s.Size), r.Note, r.P50, r.P95, r.Max, r.TStar, mib(r.RegistryEgress), r.EgressRatio,
		mib(r.SwarmBytes), mib(r.WastedBytes), mib(r.PeerBytes), mib(r.AgentRegistryBytes))
	return r
}

// TestQuick: N=4, 32 MiB image of 4 layers, 200 Mbit/s links. Cold rollout
// through the agents vs direct registry pulls, then a rollout during which
// the tracker is killed. Part of `make e2e`.
func TestQuick(t *testing.T) {
	const nodes, rate = 4, 200
	all := firstN(nodes)
	c := newCluster(t, nodes, Link{RateMbit: rate}, false)
	c.StartAgents(nodes)
	ctd := c.StartContainerd(0)

	img, size := c.seedImage(t, "e2e/quick", 32<<20, 4)
	var runs []Run
	p2p := c.rollout(t, rolloutSpec{Scenario: "cold", Mode: "p2p", Repo: "e2e/quick", Img: img, Size: size, Nodes: all,
		Containerd: map[int]*Containerd{0: ctd}})
	p2p.Note += "node 0 pulls with containerd (ctr images pull, hosts.toml → agent)"
	runs = append(runs, p2p)
	runs = append(runs, c.rollout(t, rolloutSpec{Scenario: "cold", Mode: "direct", Repo: "e2e/quick", Img: img, Size: size, Nodes: all}))
	if p2p.RegistryEgress > 2*size {
		t.Errorf("cold P2P rollout: registry egress %d bytes = %.2f× image, want ≤ 2×", p2p.RegistryEgress, p2p.EgressRatio)
	}

	// Fault: tracker killed a moment into the rollout of a new image. Peers
	// already known keep trading; later ones fall back to the registry.
	img2, size2 := c.seedImage(t, "e2e/fault-tracker", 32<<20, 4)
	fault := c.rollout(t, rolloutSpec{Scenario: "fault-tracker-killed", Mode: "p2p", Repo: "e2e/fault-tracker", Img: img2, Size: size2, Nodes: all,
		During: func() {
			time.Sleep(300 * time.Millisecond)
			c.Tracker.Kill()
		}})
	fault.Note += "tracker SIGKILLed 300 ms after start"
	runs = append(runs, fault)
	c.StartTracker()

	linkVsDirect(runs)
	files, err := writeReport("quick", "Shoal e2e quick run (TestQuick)", runs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s\n%s", strings.Join(files, ", "), markdown("TestQuick", runs))
}

// TestScenarios: the other fault and join patterns on N=4, 32 MiB, with
// the tracker on a real redis-server.
func TestScenarios(t *testing.T) {
	const nodes, rate = 4, 200
	c := newCluster(t, nodes, Link{RateMbit: rate}, true)
	c.StartPreheat()
	c.StartAgents(nodes)
	var runs []Run

	// Preheat then pull: the pull is served from the agents' caches.
	pimg, psize := c.seedImage(t, "e2e/preheat", 32<<20, 4)
	egress0 := c.Infra.TxBytes(t)
	start := time.Now()
	c.preheat(t, c.RegistryAddr()+"/e2e/preheat:v1", "e2e", nodes)
	preheatSecs := time.Since(start).Seconds()
	preheatEgress := c.Infra.TxBytes(t) - egress0
	r := c.rollout(t, rolloutSpec{Scenario: "preheat-then-pull", Mode: "p2p", Repo: "e2e/preheat", Img: pimg, Size: psize, Nodes: firstN(nodes)})
	if r.SwarmBytes != 0 || r.AgentRegistryBytes != 0 {
		t.Errorf("pull after preheat: agents downloaded %d swarm + %d HTTP bytes, want 0 (cache)", r.SwarmBytes, r.AgentRegistryBytes)
	}
	r.Note += fmt.Sprintf("preheat job took %.2fs, registry egress during preheat %s (%.2f× image); times and egress are of the pull after it", preheatSecs, mib(preheatEgress), float64(preheatEgress)/float64(psize))
	runs = append(runs, r)

	// Redis restarted (empty) mid-rollout: the tracker answers "temporarily
	// unavailable", then knows no peers until they re-announce.
	img, size := c.seedImage(t, "e2e/fault-redis", 32<<20, 4)
	r = c.rollout(t, rolloutSpec{Scenario: "fault-redis-restarted", Mode: "p2p", Repo: "e2e/fault-redis", Img: img, Size: size, Nodes: firstN(nodes),
		During: func() {
			time.Sleep(300 * time.Millisecond)
			c.Redis.Kill()
			time.Sleep(time.Second)
			c.StartRedis()
		}})
	r.Note += "redis-server SIGKILLed 300 ms after start, restarted empty 1 s later"
	runs = append(runs, r)

	// Registry (with its seeder) SIGKILLed mid-transfer and restarted 2 s
	// later: agents finish from peers, then the restarted registry.
	img, size = c.seedImage(t, "e2e/fault-registry", 32<<20, 4)
	r = c.rollout(t, rolloutSpec{Scenario: "fault-registry-restarted", Mode: "p2p", Repo: "e2e/fault-registry", Img: img, Size: size, Nodes: firstN(nodes),
		During: func() {
			time.Sleep(time.Second)
			c.Reg.Kill()
			time.Sleep(2 * time.Second)
			c.StartRegistry()
		}})
	r.Note += "registry+seeder SIGKILLed 1 s after start, restarted 2 s later"
	runs = append(runs, r)

	// One peer's agent killed mid-transfer: the others complete; the victim,
	// restarted with an empty cache, pulls again.
	img, size = c.seedImage(t, "e2e/fault-peer", 32<<20, 4)
	victim := nodes - 1
	r = c.rollout(t, rolloutSpec{Scenario: "fault-peer-killed", Mode: "p2p", Repo: "e2e/fault-peer", Img: img, Size: size, Nodes: firstN(nodes),
		MayFail: map[int]bool{victim: true},
		During: func() {
			time.Sleep(time.Second)
			c.Agents[victim].Kill()
		}})
	r.Note += fmt.Sprintf("agent of node %d SIGKILLed 1 s after start", victim)
	runs = append(runs, r)
	c.RestartAgent(victim)
	r = c.rollout(t, rolloutSpec{Scenario: "fault-peer-killed-repull", Mode: "p2p", Repo: "e2e/fault-peer", Img: img, Size: size, Nodes: []int{victim}})
	r.Note += "restarted victim pulls again (others seed)"
	runs = append(runs, r)

	// Late joiners: half pull, then the other half.
	img, size = c.seedImage(t, "e2e/late", 32<<20, 4)
	runs = append(runs, c.rollout(t, rolloutSpec{Scenario: "late-joiners-first-half", Mode: "p2p", Repo: "e2e/late", Img: img, Size: size, Nodes: []int{0, 1}}))
	runs = append(runs, c.rollout(t, rolloutSpec{Scenario: "late-joiners-second-half", Mode: "p2p", Repo: "e2e/late", Img: img, Size: size, Nodes: []int{2, 3}}))

	files, err := writeReport("scenarios", "Shoal e2e fault and late-joiner scenarios (TestScenarios)", runs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s\n%s", strings.Join(files, ", "), markdown("TestScenarios", runs))
}

// preheat creates a preheat job for image on group once n agents have
// registered, and waits for it to succeed.
func (c *Cluster) preheat(t *testing.T, image, group string, n int) {
	t.Helper()
	cl := &http.Client{Transport: c.Infra.Transport(), Timeout: 10 * time.Second}
	call := func(method, url string, body, out any) int {
		t.Helper()
		var rd io.Reader
		if body != nil {
			b, err := json.Marshal(body)
			if err != nil {
				t.Fatal(err)
			}
			rd = bytes.NewReader(b)
		}
		req, err := http.NewRequest(method, url, rd)
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Bearer "+preheatToken)
		resp, err := cl.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		defer resp.Body.Close()
		raw, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatalf("%s %s: %v", method, url, err)
		}
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %d %s: %v", method, url, resp.StatusCode, raw, err)
		}
		return resp.StatusCode
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var g struct {
			Groups []struct {
				Name  string `json:"name"`
				Alive int    `json:"alive"`
			} `json:"groups"`
		}
		call("GET", c.PreheatURL()+"/api/v1/groups", nil, &g)
		if len(g.Groups) == 1 && g.Groups[0].Name == group && g.Groups[0].Alive == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("preheat: agents did not register: %+v", g)
		}
		time.Sleep(200 * time.Millisecond)
	}
	type job struct {
		ID    int64  `json:"id"`
		State string `json:"state"`
		Error string `json:"error"`
	}
	var j job
	if code := call("POST", c.PreheatURL()+"/api/v1/jobs", map[string]any{"image": image, "groups": []string{group}}, &j); code != http.StatusCreated {
		t.Fatalf("preheat: create job: %d %+v", code, j)
	}
	deadline = time.Now().Add(5 * time.Minute)
	for {
		var v job
		call("GET", fmt.Sprintf("%s/api/v1/jobs/%d", c.PreheatURL(), j.ID), nil, &v)
		switch v.State {
		case "SUCCESS":
			return
		case "FAILURE", "CANCELED":
			t.Fatalf("preheat job %d ended %s: %s", j.ID, v.State, v.Error)
		}
		if time.Now().After(deadline) {
			t.Fatalf("preheat job %d still %s", j.ID, v.State)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func parseInts(t *testing.T, s string) []int {
	t.Helper()
	var out []int
	for _, f := range strings.Split(s, ",") {
		v, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			t.Fatalf("bad list %q: %v", s, err)
		}
		out = append(out, v)
	}
	return out
}

// TestMatrix runs cold rollouts (P2P and direct) for every N and image size,
// plus one delayed-link run. Only with -matrix (make bench-e2e).
func TestMatrix(t *testing.T) {
	if !*matrix {
		t.Skip("matrix benchmark: run with -args -matrix (make bench-e2e)")
	}
	ns, sizes := parseInts(t, *matrixN), parseInts(t, *matrixSizes)
	maxN := 0
	for _, n := range ns {
		maxN = max(maxN, n)
	}
	var runs []Run
	cell := func(t *testing.T, c *Cluster, sizeMiB, n int, tag string) {
		repo := fmt.Sprintf("e2e/m%s-%dmib-n%d", tag, sizeMiB, n)
		img, size := c.seedImage(t, repo, int64(sizeMiB)<<20, 4)
		c.StartAgents(n)
		runs = append(runs, c.rollout(t, rolloutSpec{Scenario: "cold", Mode: "p2p", Repo: repo, Img: img, Size: size, Nodes: firstN(n)}))
		c.StopAgents()
		if int64(n)*int64(sizeMiB) > *matrixDirectMax {
			runs = append(runs, predictedDirect(runs[len(runs)-1]))
		} else {
			runs = append(runs, c.rollout(t, rolloutSpec{Scenario: "cold", Mode: "direct", Repo: repo, Img: img, Size: size, Nodes: firstN(n)}))
		}
		linkVsDirect(runs)
		// Written after every cell so an interrupted matrix keeps its data.
		if _, err := writeReport(*matrixName, "Shoal e2e matrix (TestMatrix)", runs); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("rate", func(t *testing.T) {
		c := newCluster(t, maxN, Link{RateMbit: *matrixRate}, false)
		for _, s := range sizes {
			for _, n := range ns {
				cell(t, c, s, n, "")
			}
		}
	})
	if *matrixDelay > 0 && *matrixDelN > 0 {
		t.Run("delay", func(t *testing.T) {
			requireNetns(t)
			if err := netemAvailable(t); err != nil {
				t.Skipf("no delayed-link run: %v", err)
			}
			c := newCluster(t, *matrixDelN, Link{RateMbit: *matrixRate, Delay: *matrixDelay}, false)
			cell(t, c, sizes[0], *matrixDelN, "d")
		})
	}
	t.Logf("\n%s", markdown("TestMatrix", runs))
}
