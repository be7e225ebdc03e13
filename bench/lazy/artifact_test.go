package lazy

import (
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// TestArtifactBenchmark runs only when SHOAL_BENCH_OUT names a directory
// (`make bench`, `make bench-artifact`). An OCI artifact of
// SHOAL_BENCH_ARTIFACT_GIB GiB (default 8) in 4 blobs of random data is
// pushed with ORAS and pulled with ORAS: directly from the registry, then
// through an agent cold, through a second agent (from the first), warm;
// through an agent whose cache is smaller than the artifact (eviction);
// and through an agent killed with -9 half way through and restarted
// (resume). Every agent's RSS is sampled throughout.
func TestArtifactBenchmark(t *testing.T) {
	out := os.Getenv("SHOAL_BENCH_OUT")
	if out == "" {
		t.Skip("benchmark: run through `make bench` or `make bench-artifact` (SHOAL_BENCH_OUT unset)")
	}
	oras := testenv.ToolBinary(t, "ORAS_BIN")
	gib := envInt("SHOAL_BENCH_ARTIFACT_GIB", 8)
	const nBlobs = 4
	total := int64(gib) << 30
	e := startEnv(t, 0)
	res := artifactResult{Date: time.Now().UTC().Format(time.RFC3339), GiB: gib, Blobs: nBlobs, Load: loadavg()}

	src := t.TempDir()
	var names []string
	for i := range nBlobs {
		name := fmt.Sprintf("weights-%d.bin", i)
		names = append(names, name)
		f, err := os.Create(filepath.Join(src, name))
		if err != nil {
			t.Fatal(err)
		}
		var seed [32]byte
		crand.Read(seed[:])
		if _, err := io.Copy(f, io.LimitReader(rand.NewChaCha8(seed), total/nBlobs)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	orasRun := func(dir string, args ...string) (time.Duration, error) {
		cmd := exec.Command(oras, args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), "HOME="+t.TempDir())
		start := time.Now()
		msg, err := cmd.CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("oras %s: %v: %s", strings.Join(args, " "), err, lastLines(string(msg)))
		}
		return time.Since(start), nil
	}
	ref := repo + ":model"
	took, err := orasRun(src, append([]string{"push", "--plain-http", "--artifact-type", "application/vnd.example.model.v1", e.regAddr + "/" + ref}, names...)...)
	if err != nil {
		t.Fatal(err)
	}
	res.PushSeconds = round3(took.Seconds())
	t.Logf("pushed %d GiB in %d blobs with ORAS in %s", gib, nBlobs, took.Round(time.Millisecond))

	// pull pulls the artifact from host into a fresh directory (removed
	// after: the files are what a runtime writes, the page cache the same
	// for every scenario) and returns its throughput, MiB/s.
	pull := func(host string) (float64, error) {
		dir, err := os.MkdirTemp(t.TempDir(), "pull-")
		if err != nil {
			return 0, err
		}
		defer os.RemoveAll(dir)
		took, err := orasRun(dir, "pull", "--plain-http", host+"/"+ref)
		if err != nil {
			return 0, err
		}
		return round3(float64(total) / (1 << 20) / took.Seconds()), nil
	}
	// RSS of every agent, sampled every 200 ms until the end.
	var rssMu sync.Mutex
	rss := map[string]float64{}
	var watched []*agent
	stop := make(chan struct{})
	var sampler sync.WaitGroup
	sampler.Go(func() {
		tick := time.NewTicker(200 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			rssMu.Lock()
			for _, a := range watched {
				rss[a.id] = max(rss[a.id], rssMiB(a.pid))
			}
			rssMu.Unlock()
		}
	})
	watch := func(a *agent) *agent {
		rssMu.Lock()
		watched = append(watched, a)
		rssMu.Unlock()
		return a
	}
	must := func(v float64, err error) float64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return v
	}

	res.DirectMiBs = append(res.DirectMiBs, must(pull(e.regAddr)))
	a := watch(e.startAgent("", 4*total))
	res.ColdMiBs = must(pull(a.mirror))
	b := watch(e.startAgent("", 4*total))
	res.PeerMiBs = must(pull(b.mirror))
	res.PeerFromPeers = scrape(b.mirror, `shoal_agent_blob_bytes_total{source="peer"}`)
	res.WarmMiBs = must(pull(a.mirror))
	res.DirectMiBs = append(res.DirectMiBs, must(pull(e.regAddr)))
	direct := (res.DirectMiBs[0] + res.DirectMiBs[1]) / 2
	res.ColdRatio, res.PeerRatio, res.WarmRatio = round3(res.ColdMiBs/direct), round3(res.PeerMiBs/direct), round3(res.WarmMiBs/direct)
	t.Logf("ORAS pull MiB/s: direct %v, cold %.0f (%.2fx), peer %.0f (%.2fx), warm %.0f (%.2fx)", res.DirectMiBs, res.ColdMiBs, res.ColdRatio, res.PeerMiBs, res.PeerRatio, res.WarmMiBs, res.WarmRatio)
	b.p.Stop()

	// Eviction: a cache of 3/4 of the artifact. Every blob must still come
	// out whole (ORAS checks each digest), the cache never over its bound.
	cacheMax := total * 3 / 4
	c := watch(e.startAgent("", cacheMax))
	var used float64
	evictDone, sampled := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			used = max(used, scrape(c.mirror, "shoal_agent_cache_used_bytes"))
			select {
			case <-evictDone:
				return
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	res.EvictMiBs = must(pull(c.mirror))
	close(evictDone)
	<-sampled
	res.EvictCacheMax, res.EvictUsedMax = float64(cacheMax), used
	res.Evictions = scrape(c.mirror, "shoal_agent_cache_evictions_total")
	t.Logf("cache of %.0f MiB: pull at %.0f MiB/s, %v evictions, cache use at most %.0f MiB", float64(cacheMax)/(1<<20), res.EvictMiBs, res.Evictions, used/(1<<20))
	c.p.Stop()

	// Resume: kill -9 an agent half way through its first blob, restart it
	// on the same cache, pull again.
	d := watch(e.startAgent("", 4*total))
	go pull(d.mirror) // fails when the agent dies
	half := float64(total / nBlobs / 2)
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(20 * time.Millisecond) {
		if scrape(d.mirror, "shoal_agent_inflight_blob_bytes") >= half {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("resume: the download never got half way through a blob")
		}
	}
	res.KilledAfter = scrape(d.mirror, "shoal_agent_inflight_blob_bytes")
	d.p.Kill()
	d2 := watch(e.restartAgent(d))
	res.ResumeMiBs = must(pull(d2.mirror))
	res.Resumed = scrape(d2.mirror, "shoal_agent_resumed_bytes_total")
	t.Logf("resume: killed with %.0f MiB of blobs in flight; restarted kept %.0f MiB of verified pieces", res.KilledAfter/(1<<20), res.Resumed/(1<<20))

	close(stop)
	sampler.Wait()
	res.RSSMaxMiB = map[string]float64{}
	for id, v := range rss {
		res.RSSMaxMiB[id] = round3(v)
	}
	res.LoadAfter = loadavg()
	j, _ := json.MarshalIndent(res, "", "  ")
	os.MkdirAll(out, 0o755)
	if err := os.WriteFile(filepath.Join(out, "lazy-artifact.json"), append(j, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	md := res.markdown()
	if err := os.WriteFile(filepath.Join(out, "lazy-artifact.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + md)
}

type artifactResult struct {
	Date          string             `json:"date"`
	Load          string             `json:"loadavg_before"`
	LoadAfter     string             `json:"loadavg_after"`
	GiB           int                `json:"gib"`
	Blobs         int                `json:"blobs"`
	PushSeconds   float64            `json:"push_seconds"`
	DirectMiBs    []float64          `json:"direct_mib_s"`
	ColdMiBs      float64            `json:"cold_mib_s"`
	PeerMiBs      float64            `json:"peer_mib_s"`
	WarmMiBs      float64            `json:"warm_mib_s"`
	ColdRatio     float64            `json:"cold_ratio"`
	PeerRatio     float64            `json:"peer_ratio"`
	WarmRatio     float64            `json:"warm_ratio"`
	PeerFromPeers float64            `json:"peer_bytes_from_peers"`
	EvictMiBs     float64            `json:"evict_mib_s"`
	EvictCacheMax float64            `json:"evict_cache_max_bytes"`
	EvictUsedMax  float64            `json:"evict_cache_used_max_bytes"`
	Evictions     float64            `json:"evictions"`
	KilledAfter   float64            `json:"killed_with_inflight_bytes"`
	Resumed       float64            `json:"resumed_bytes"`
	ResumeMiBs    float64            `json:"resume_mib_s"`
	RSSMaxMiB     map[string]float64 `json:"rss_max_mib"`
}

func (r artifactResult) markdown() string {
	var s strings.Builder
	fmt.Fprintf(&s, "# A big OCI artifact through the agent, with ORAS (bench/lazy)\n\n%s; %d GiB in %d blobs of random data, pushed and pulled with ORAS v1.3.6 on loopback, 1 MiB pieces; one 2-core machine shared with other work (load %s before, %s after): ratios are same-run.\n\n",
		r.Date, r.GiB, r.Blobs, r.Load, r.LoadAfter)
	s.WriteString("| scenario | ORAS pull | ÷ direct | target |\n|---|---|---|---|\n")
	fmt.Fprintf(&s, "| direct from the registry (before, after) | %.0f, %.0f MiB/s | 1 | |\n", r.DirectMiBs[0], r.DirectMiBs[1])
	fmt.Fprintf(&s, "| through an agent, cold | %.0f MiB/s | %.2f× | ≥ 0.8× |\n", r.ColdMiBs, r.ColdRatio)
	fmt.Fprintf(&s, "| through a second agent (%.0f%% of bytes from the first) | %.0f MiB/s | %.2f× | ≥ 0.8× |\n", 100*r.PeerFromPeers/float64(int64(r.GiB)<<30), r.PeerMiBs, r.PeerRatio)
	fmt.Fprintf(&s, "| through the first agent again, warm | %.0f MiB/s | %.2f× | ≥ 0.95× |\n", r.WarmMiBs, r.WarmRatio)
	fmt.Fprintf(&s, "\n- **Eviction**: an agent with a cache of %.0f MiB (¾ of the artifact) pulled it at %.0f MiB/s, every blob verified by ORAS; %v evictions, cache use at most %.0f MiB.\n",
		r.EvictCacheMax/(1<<20), r.EvictMiBs, r.Evictions, r.EvictUsedMax/(1<<20))
	fmt.Fprintf(&s, "- **Resume**: an agent killed with -9 with %.0f MiB of blobs in flight kept %.0f MiB of verified pieces after its restart; the second pull ran at %.0f MiB/s.\n",
		r.KilledAfter/(1<<20), r.Resumed/(1<<20), r.ResumeMiBs)
	peak := 0.0
	for _, v := range r.RSSMaxMiB {
		peak = max(peak, v)
	}
	fmt.Fprintf(&s, "- **Agent RSS**, sampled every 200 ms throughout: at most %.0f MiB (target ≤ 256 MiB); per agent %v.\n", peak, r.RSSMaxMiB)
	return s.String()
}

func lastLines(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return strings.Join(lines[max(0, len(lines)-5):], "\n")
}
