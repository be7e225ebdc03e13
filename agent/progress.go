package agent

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalproject/shoal/internal/nodeapi"
)

// Progress of long pulls: while a blob downloads, its bytes so far by
// source, its size and its average rate are gauges labelled by digest, for
// the largest in-flight blobs only (progressMinBytes and up, progressMax of
// them), so that a node pulling hundreds of small layers adds no series and
// one pulling a multi-GiB model shows where it stands. The series exist
// only while the blob is in flight: they are collected from the downloads
// at each scrape, not kept.
const (
	progressMinBytes = 64 << 20
	progressMax      = 8
)

// flightProgress is one download's live counts.
type flightProgress struct {
	digest                  string
	start                   time.Time
	size                    atomic.Int64 // -1 while unknown
	fromPeers, fromRegistry atomic.Int64
}

// progressSet is the downloads in flight, for the collector.
type progressSet struct {
	mu sync.Mutex
	m  map[*flightProgress]struct{}
}

func (s *progressSet) add(hexd string) *flightProgress {
	p := &flightProgress{digest: "sha256:" + hexd, start: time.Now()}
	p.size.Store(-1)
	s.mu.Lock()
	if s.m == nil {
		s.m = map[*flightProgress]struct{}{}
	}
	s.m[p] = struct{}{}
	s.mu.Unlock()
	return p
}

func (s *progressSet) remove(p *flightProgress) {
	s.mu.Lock()
	delete(s.m, p)
	s.mu.Unlock()
}

// largest returns the in-flight downloads shown: the largest of those of
// progressMinBytes and up.
func (s *progressSet) largest() []*flightProgress {
	s.mu.Lock()
	var out []*flightProgress
	for p := range s.m {
		if p.size.Load() >= progressMinBytes {
			out = append(out, p)
		}
	}
	s.mu.Unlock()
	slices.SortFunc(out, func(a, b *flightProgress) int { return int(b.size.Load() - a.size.Load()) })
	return out[:min(len(out), progressMax)]
}

// downloads is the largest in-flight blobs as the heartbeat reports them
// to preheat, for the console's nodes view.
func (s *progressSet) downloads(now time.Time) []nodeapi.Download {
	ps := s.largest()
	out := make([]nodeapi.Download, 0, min(len(ps), nodeapi.MaxDownloads))
	for _, p := range ps[:min(len(ps), nodeapi.MaxDownloads)] {
		d := nodeapi.Download{Digest: p.digest, Size: p.size.Load(), StartedAt: p.start.UTC(),
			BytesFromPeers: p.fromPeers.Load(), BytesFromRegistry: p.fromRegistry.Load()}
		if secs := now.Sub(p.start).Seconds(); secs > 0 {
			d.BytesPerSecond = int64(float64(d.BytesFromPeers+d.BytesFromRegistry) / secs)
		}
		out = append(out, d)
	}
	return out
}

var (
	descInflightBytes = prometheus.NewDesc("shoal_agent_inflight_blob_bytes",
		"Bytes of a blob in flight downloaded so far, by source (peer, registry); the largest in-flight blobs of 64 MiB and more only.", []string{"digest", "source"}, nil)
	descInflightSize = prometheus.NewDesc("shoal_agent_inflight_blob_size_bytes",
		"Size of a blob in flight (the largest of 64 MiB and more only).", []string{"digest"}, nil)
	descInflightRate = prometheus.NewDesc("shoal_agent_inflight_blob_rate_bytes_per_second",
		"Average download rate of a blob in flight since it started (the largest of 64 MiB and more only).", []string{"digest"}, nil)
)

// progressCollector shows progressSet at scrape time.
type progressCollector struct{ s *progressSet }

func (c progressCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descInflightBytes
	ch <- descInflightSize
	ch <- descInflightRate
}

func (c progressCollector) Collect(ch chan<- prometheus.Metric) {
	now := time.Now()
	for _, p := range c.s.largest() {
		peers, reg := float64(p.fromPeers.Load()), float64(p.fromRegistry.Load())
		ch <- prometheus.MustNewConstMetric(descInflightBytes, prometheus.GaugeValue, peers, p.digest, sourcePeer)
		ch <- prometheus.MustNewConstMetric(descInflightBytes, prometheus.GaugeValue, reg, p.digest, sourceRegistry)
		ch <- prometheus.MustNewConstMetric(descInflightSize, prometheus.GaugeValue, float64(p.size.Load()), p.digest)
		rate := 0.0
		if d := now.Sub(p.start).Seconds(); d > 0 {
			rate = (peers + reg) / d
		}
		ch <- prometheus.MustNewConstMetric(descInflightRate, prometheus.GaugeValue, rate, p.digest)
	}
}
