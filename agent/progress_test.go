package agent

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalproject/shoal/internal/metrics/metricstest"
	"github.com/shoalproject/shoal/internal/nodeapi"
)

// Progress series: only big blobs, only the largest few, only while in
// flight; documented like every metric.
func TestProgressSeries(t *testing.T) {
	var s progressSet
	reg := prometheus.NewRegistry()
	reg.MustRegister(progressCollector{&s})
	small := s.add(strings.Repeat("0", 64))
	small.size.Store(1 << 20)
	var big []*flightProgress
	for i := range progressMax + 2 {
		p := s.add(fmt.Sprintf("%064x", i+1))
		p.size.Store(int64(i+1) << 30)
		p.fromPeers.Add(3 << 20)
		p.fromRegistry.Add(1 << 20)
		big = append(big, p)
	}
	if n := count(t, reg, "shoal_agent_inflight_blob_size_bytes"); n != progressMax {
		t.Fatalf("%d blobs shown, want the %d largest", n, progressMax)
	}
	for _, p := range s.largest() {
		if p == small || p == big[0] || p == big[1] {
			t.Fatalf("shown: %s of %d bytes, not among the largest", p.digest, p.size.Load())
		}
	}
	metricstest.Documented(t, "agent", reg)
	// The heartbeat lists the same blobs, and preheat accepts what it says.
	hb := nodeapi.Heartbeat{ID: "n", Downloads: s.downloads(time.Now().Add(time.Second))}
	if len(hb.Downloads) != progressMax {
		t.Fatalf("heartbeat lists %d downloads, want %d", len(hb.Downloads), progressMax)
	}
	if d := hb.Downloads[0]; d.Size != int64(progressMax+2)<<30 || d.BytesFromPeers != 3<<20 || d.BytesPerSecond <= 0 {
		t.Fatalf("largest download reported as %+v", d)
	}
	if err := hb.Check(); err != nil {
		t.Fatal(err)
	}
	for _, p := range big {
		s.remove(p)
	}
	if n := count(t, reg, ""); n != 0 {
		t.Fatalf("%d series once nothing big is in flight", n)
	}
}

// count is the number of series g gathers of the family name ("": all).
func count(t *testing.T, g prometheus.Gatherer, name string) int {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, mf := range mfs {
		if name == "" || mf.GetName() == name {
			n += len(mf.GetMetric())
		}
	}
	return n
}
