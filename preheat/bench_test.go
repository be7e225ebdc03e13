package preheat

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// TestPreheatBenchmark (run by `make bench`, which sets SHOAL_BENCH_OUT):
// a 256 MiB image onto 8 real agents — preheat vs the agents pulling it
// directly through their mirrors, same run, with registry blob egress for
// both. P2P is off in this benchmark (it needs Shoal's registry + tracker,
// measured by the agent/registry benchmarks), so both paths fetch every
// blob from the registry; what it measures is preheat's dispatch overhead
// and the time a rollout saves by pulling from a warm cache.
func TestPreheatBenchmark(t *testing.T) {
	out := os.Getenv("SHOAL_BENCH_OUT")
	if out == "" {
		t.Skip("benchmark; run through `make bench`")
	}
	const agents, layers, layerSize = 8, 4, 64 << 20
	bin := testenv.ShoalBinary(t)
	reg := startRegistry(t)
	img := reg.push(t, "bench/big:v1", layerSize, layers)
	blobs := blobDigests(t, img)
	var total int64
	ls, _ := img.Layers()
	for _, l := range ls {
		n, _ := l.Size()
		total += n
	}

	pullAll := func(as []*realAgent) time.Duration {
		start := time.Now()
		var wg sync.WaitGroup
		for _, a := range as {
			for _, d := range blobs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp, err := http.Get("http://" + a.mirror + "/v2/bench/big/blobs/" + d)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Errorf("pull %s: %s", d, resp.Status)
					}
				}()
			}
		}
		wg.Wait()
		return time.Since(start)
	}
	startAgents := func(api, tag string) []*realAgent {
		var as []*realAgent
		for i := 0; i < agents; i++ {
			as = append(as, startRealAgent(t, bin, fmt.Sprintf("%s-%d", tag, i), "bench", reg.URL, api))
		}
		return as
	}

	cfg := testConfig(reg.URL)
	cfg.FetchTimeout, cfg.JobTimeout = 5*time.Minute, 10*time.Minute
	r := startReplica(t, cfg, NewMemoryStore())
	// Direct: cold agents pull through their mirrors from the registry.
	e0 := reg.blobBytes.Load()
	direct := pullAll(startAgents("http://127.0.0.1:1", "direct"))
	directEgress := reg.blobBytes.Load() - e0

	// Preheat onto fresh agents, then the rollout pull from warm caches.
	pre := startAgents(r.URL, "pre")
	deadline := time.Now().Add(30 * time.Second)
	for {
		var gs struct{ Groups []GroupView }
		call(t, "GET", r.URL+"/api/v1/groups", nil, nil, &gs)
		if len(gs.Groups) == 1 && gs.Groups[0].Alive == agents {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("agents did not register: %+v", gs.Groups)
		}
		time.Sleep(100 * time.Millisecond)
	}
	e1 := reg.blobBytes.Load()
	start := time.Now()
	var j JobView
	if code := call(t, "POST", r.URL+"/api/v1/jobs", nil, JobRequest{Image: reg.Host + "/bench/big:v1", Groups: []string{"bench"}}, &j); code != 201 {
		t.Fatalf("create %d", code)
	}
	waitJob(t, r.URL, j.ID, StateSuccess, 10*time.Minute)
	preheatDur := time.Since(start)
	preheatEgress := reg.blobBytes.Load() - e1
	e2 := reg.blobBytes.Load()
	warm := pullAll(pre)
	warmEgress := reg.blobBytes.Load() - e2

	res := map[string]any{
		"agents": agents, "imageBytes": total, "blobs": len(blobs), "p2p": false,
		"directPullSeconds": direct.Seconds(), "directEgressBytes": directEgress,
		"preheatSeconds": preheatDur.Seconds(), "preheatEgressBytes": preheatEgress,
		"pullAfterPreheatSeconds": warm.Seconds(), "pullAfterPreheatEgressBytes": warmEgress,
	}
	b, _ := json.MarshalIndent(res, "", "  ")
	if err := os.WriteFile(filepath.Join(out, "preheat.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	mib := func(n int64) string { return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20)) }
	md := fmt.Sprintf(`# Preheat: %s image to %d agents (P2P off, loopback)

| path | wall time | registry blob egress |
|---|---|---|
| direct pull, cold agents | %.2fs | %s |
| preheat job | %.2fs | %s |
| rollout pull after preheat | %.2fs | %s |

P2P disabled here: both paths take every blob from the registry; the swarm's
egress savings are measured in the agent and registry benchmarks.
`, mib(total), agents, direct.Seconds(), mib(directEgress), preheatDur.Seconds(), mib(preheatEgress), warm.Seconds(), mib(warmEgress))
	if err := os.WriteFile(filepath.Join(out, "preheat.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", md)
}
