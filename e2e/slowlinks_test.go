package e2e

import (
	"testing"
	"time"
)

// TestSlowLinks is the regression test of the rollout that livelocked
// (issue 20): many nodes on slow links, where a swarm's first pieces come
// slowly from a registry every node shares. Before the stall hold and the
// registry's share dedupe, 16 nodes at 20 Mbit/s sent 52 of 64 layers solo
// to the registry (egress 10.7× the image), and 24-32 nodes at 10-20 Mbit/s
// had no layer complete for minutes and fell back to plain HTTP at the
// 10-minute deadline.
//
// The bound: no download stalls long enough to leave the swarm for plain
// HTTP (no "stall" or "deadline" fallback, with the agents' stall timeout
// at 20 s, four piece-times on these links), the registry sends at most
// three times the image, and the last node finishes within 3× T* (a
// rollout that waits for a stall timeout even once per layer cannot).
// Measured on a loaded host (load ~20): 2.09× T*, egress 1.69×. The agent
// of 4c8fbb3, before those fixes, finished no node in 15 minutes here.
func TestSlowLinks(t *testing.T) {
	const nodes, rate, mib = 16, 10, 24
	c := newCluster(t, nodes, Link{RateMbit: rate}, false)
	c.StallTimeout = 20 * time.Second
	img, size := c.seedImage(t, "e2e/slow-links", mib<<20, 4)
	c.StartAgents(nodes)
	r := c.rollout(t, rolloutSpec{Scenario: "slow-links", Mode: "p2p", Repo: "e2e/slow-links", Img: img, Size: size, Nodes: firstN(nodes)})
	for _, reason := range []string{"stall", "deadline"} {
		if n := r.Fallbacks[reason]; n > 0 {
			t.Errorf("%d downloads fell back to plain HTTP (%s): a swarm stalled past the stall timeout", n, reason)
		}
	}
	if r.EgressRatio > 3 {
		t.Errorf("registry egress %.2f× the image, want ≤ 3×", r.EgressRatio)
	}
	if r.Max > 3*r.TStar {
		t.Errorf("last node after %.1f s = %.2f× T* (%.1f s), want ≤ 3×", r.Max, r.Max/r.TStar, r.TStar)
	}
	if len(r.Seconds) != nodes {
		t.Errorf("%d of %d nodes finished", len(r.Seconds), nodes)
	}
	files, err := writeReport("slow-links", "Shoal e2e: 16 nodes on 10 Mbit/s links (TestSlowLinks)", []Run{r})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report: %v", files)
}
