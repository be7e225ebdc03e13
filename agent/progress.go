package agent

import (
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalproject/shoal/agent/internal/fetch"
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

// fetchMetrics is the downloads' view of the agent's metrics.
type fetchMetrics struct{ m *agentMetrics }

func (f fetchMetrics) Download(hexd string) fetch.Progress {
	f.m.downloads.Inc()
	return downloadProgress{m: f.m, p: f.m.inflight.add(hexd)}
}

func (f fetchMetrics) Lookup(hit bool) {
	if hit {
		f.m.hits.Inc()
	} else {
		f.m.misses.Inc()
	}
}

func (f fetchMetrics) RoomWait(admitted bool) {
	if admitted {
		f.m.roomWaits.WithLabelValues("admitted").Inc()
	} else {
		f.m.roomWaits.WithLabelValues("failed").Inc()
	}
}

func (f fetchMetrics) Mismatch()           { f.m.mismatches.Inc() }
func (f fetchMetrics) Resumed(bytes int64) { f.m.resumed.Add(float64(bytes)) }

func (f fetchMetrics) Fetched(fromPeers, fromRegistry int64) {
	f.m.bytes.WithLabelValues(sourcePeer).Add(float64(fromPeers))
	f.m.bytes.WithLabelValues(sourceRegistry).Add(float64(fromRegistry))
}

// downloadProgress is one download's: its progress series and the
// swarm engine's counts.
type downloadProgress struct {
	m *agentMetrics
	p *flightProgress
}

func (d downloadProgress) PeerBytes(received, useful int) {
	d.p.fromPeers.Add(int64(useful))
	d.m.swarm.WithLabelValues("all").Add(float64(received))
	d.m.swarm.WithLabelValues("useful").Add(float64(useful))
}

func (d downloadProgress) RegistryBytes(why string, n int) {
	d.p.fromRegistry.Add(int64(n))
	d.m.origin.WithLabelValues(why).Add(float64(n))
}

func (d downloadProgress) Fallback(reason string) { d.m.fallbacks.WithLabelValues(reason).Inc() }
func (d downloadProgress) Size(n int64)           { d.p.size.Store(n) }
func (d downloadProgress) HTTPBytes(n int64)      { d.p.fromRegistry.Add(n) }

func (d downloadProgress) Done(source string) {
	d.m.inflight.remove(d.p)
	if source != "" {
		d.m.pulls.WithLabelValues(source).Observe(time.Since(d.p.start).Seconds())
	}
}
