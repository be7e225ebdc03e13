package e2e

import (
	"context"
	"flag"
	"fmt"
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
	matrixName  = flag.String("matrix.out", "matrix", "TestMatrix: results/<name>.{json,md,svg}")
)

func TestMain(m *testing.M) {
	flag.Parse()
	// An interrupted run still removes its namespaces (processes die with
	// their namespace or by Pdeathsig).
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

func metricSum(ms []map[string]float64, key string) int64 {
	var s float64
	for _, m := range ms {
		s += m[key]
	}
	return int64(s)
}

// rollout has every node pull repo at the same moment, through its agent
// (mode p2p) or straight from the registry (direct). during, if set, runs
// concurrently (fault injection). Pull errors fail the test.
func (c *Cluster) rollout(t *testing.T, scenario, mode, repo string, img v1.Image, size int64, nodes int, during func()) Run {
	t.Helper()
	r := Run{Scenario: scenario, Mode: mode, N: nodes, ImageBytes: size, RateMbit: c.Net.Link.RateMbit, DelayMs: c.Net.Link.Delay.Milliseconds()}
	hosts := c.Nodes[:nodes]
	host := c.RegistryAddr()
	if mode == "p2p" {
		host = mirrorAddr
	}
	var before []map[string]float64
	if mode == "p2p" {
		for _, h := range hosts {
			before = append(before, scrape(t, h, "http://"+mirrorAddr+"/metrics"))
		}
	}
	egress0 := c.Infra.TxBytes(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	r.Seconds = make([]float64, nodes)
	errs := make([]error, nodes)
	var wg sync.WaitGroup
	go0 := make(chan struct{})
	for i, h := range hosts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-go0
			start := time.Now()
			errs[i] = pull(ctx, h.Transport(), host+"/"+repo+":v1", img)
			r.Seconds[i] = time.Since(start).Seconds()
		}()
	}
	close(go0)
	var hookDone chan struct{}
	if during != nil {
		hookDone = make(chan struct{})
		go func() { defer close(hookDone); during() }()
	}
	wg.Wait()
	if hookDone != nil {
		<-hookDone
	}
	r.RegistryEgress = c.Infra.TxBytes(t) - egress0
	for i, err := range errs {
		if err != nil {
			t.Errorf("%s/%s pull on node %d (%s): %v", scenario, mode, i, hosts[i].Name, err)
		}
	}
	if mode == "p2p" {
		var after []map[string]float64
		for _, h := range hosts {
			after = append(after, scrape(t, h, "http://"+mirrorAddr+"/metrics"))
		}
		r.SwarmBytes = metricSum(after, `shoal_agent_blob_bytes_total{source="peers"}`) - metricSum(before, `shoal_agent_blob_bytes_total{source="peers"}`)
		r.PeerBytes = metricSum(after, "shoal_agent_uploaded_bytes") - metricSum(before, "shoal_agent_uploaded_bytes")
		r.AgentRegistryBytes = metricSum(after, `shoal_agent_blob_bytes_total{source="registry"}`) - metricSum(before, `shoal_agent_blob_bytes_total{source="registry"}`)
		if mm := metricSum(after, "shoal_agent_digest_mismatches_total") - metricSum(before, "shoal_agent_digest_mismatches_total"); mm > 0 {
			r.Note = fmt.Sprintf("%d agent-side digest mismatches (discarded)", mm)
		}
	}
	r.finish()
	t.Logf("%s/%s N=%d %s: p50 %.2fs p95 %.2fs max %.2fs (T* %.2fs) registry egress %s (%.2f× image) swarm %s node-to-node %s agent-HTTP %s",
		scenario, mode, nodes, mib(size), r.P50, r.P95, r.Max, r.TStar, mib(r.RegistryEgress), r.EgressRatio,
		mib(r.SwarmBytes), mib(r.PeerBytes), mib(r.AgentRegistryBytes))
	return r
}

// TestQuick: N=4, 32 MiB image of 4 layers, 200 Mbit/s links. Cold rollout
// through the agents vs direct registry pulls, then a rollout during which
// the tracker is killed. Part of `make e2e`.
func TestQuick(t *testing.T) {
	const nodes, rate = 4, 200
	c := newCluster(t, nodes, Link{RateMbit: rate})
	c.StartAgents(nodes)

	img, size := c.seedImage(t, "e2e/quick", 32<<20, 4)
	var runs []Run
	p2p := c.rollout(t, "cold", "p2p", "e2e/quick", img, size, nodes, nil)
	runs = append(runs, p2p)
	runs = append(runs, c.rollout(t, "cold", "direct", "e2e/quick", img, size, nodes, nil))
	if p2p.RegistryEgress > 2*size {
		t.Errorf("cold P2P rollout: registry egress %d bytes > 2× image (%d)", p2p.RegistryEgress, 2*size)
	}

	// Fault: tracker killed a moment into the rollout of a new image. Peers
	// already known keep trading; later ones fall back to the registry.
	img2, size2 := c.seedImage(t, "e2e/fault", 32<<20, 4)
	fault := c.rollout(t, "fault-tracker-killed", "p2p", "e2e/fault", img2, size2, nodes, func() {
		time.Sleep(300 * time.Millisecond)
		c.Tracker.Kill()
	})
	fault.Note = "tracker SIGKILLed 300 ms after start"
	runs = append(runs, fault)
	c.StartTracker()

	linkVsDirect(runs)
	files, err := writeReport("quick", "Shoal e2e quick run (TestQuick)", runs)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %s\n%s", strings.Join(files, ", "), markdown("TestQuick", runs))
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
		runs = append(runs, c.rollout(t, "cold", "p2p", repo, img, size, n, nil))
		c.StopAgents()
		runs = append(runs, c.rollout(t, "cold", "direct", repo, img, size, n, nil))
		linkVsDirect(runs)
		// Written after every cell so an interrupted matrix keeps its data.
		if _, err := writeReport(*matrixName, "Shoal e2e matrix (TestMatrix)", runs); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("rate", func(t *testing.T) {
		c := newCluster(t, maxN, Link{RateMbit: *matrixRate})
		for _, s := range sizes {
			for _, n := range ns {
				cell(t, c, s, n, "")
			}
		}
	})
	if *matrixDelay > 0 && *matrixDelN > 0 {
		t.Run("delay", func(t *testing.T) {
			c := newCluster(t, *matrixDelN, Link{RateMbit: *matrixRate, Delay: *matrixDelay})
			cell(t, c, sizes[0], *matrixDelN, "d")
		})
	}
	t.Logf("\n%s", markdown("TestMatrix", runs))
}
