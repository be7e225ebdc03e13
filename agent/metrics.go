package agent

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalproject/shoal/agent/internal/peer"
)

// agentMetrics is the agent's private registry and what it counts
// (docs/metrics.md lists every metric), grouped by concern. The groups are
// embedded so a handle reads the same from anywhere in the package
// (a.metrics.evictions is the cache group's).
type agentMetrics struct {
	reg *prometheus.Registry
	mirrorMetrics
	downloadMetrics
	cacheMetrics
}

// mirrorMetrics count what clients ask the mirror.
type mirrorMetrics struct {
	requests *prometheus.CounterVec
	ranges   *prometheus.CounterVec
}

// downloadMetrics count the blobs' downloads: how many, where their bytes
// came from, how they ended and how long they took.
type downloadMetrics struct {
	downloads  prometheus.Counter
	bytes      *prometheus.CounterVec
	swarm      *prometheus.CounterVec
	origin     *prometheus.CounterVec
	fallbacks  *prometheus.CounterVec
	mismatches prometheus.Counter
	resumed    prometheus.Counter
	// pulls is how long whole downloads took, by how they came (p2p, http).
	pulls *prometheus.HistogramVec
	// inflight is the downloads under way, for their progress series.
	inflight progressSet
}

// cacheMetrics count the blob store's answers and evictions.
type cacheMetrics struct {
	hits      prometheus.Counter
	misses    prometheus.Counter
	evictions prometheus.Counter
	// roomWaits counts downloads that waited for room, by result.
	roomWaits *prometheus.CounterVec
}

// Values of shoal_agent_blob_bytes_total's source label: where the bytes
// came from (the house's one name for that concept, package metrics).
const (
	sourcePeer     = "peer"
	sourceRegistry = "registry"
	sourceCache    = "cache"
)

func newMetrics(a *Agent) *agentMetrics {
	m := &agentMetrics{reg: prometheus.NewRegistry(), mirrorMetrics: mirrorMetrics{requests: newMirrorRequests()}}
	m.bytes = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_blob_bytes_total",
		Help: "Blob bytes by source: peer (other nodes) and registry (its share of pieces and HTTP fallback) downloaded; cache = served to clients from the cache."}, []string{"source"})
	m.hits = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_agent_cache_hits_total", Help: "Blob requests served from the cache."})
	m.misses = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_agent_cache_misses_total", Help: "Blob requests that needed a download (or joined one)."})
	m.evictions = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_agent_cache_evictions_total", Help: "Blobs evicted from the cache."})
	m.roomWaits = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_cache_room_waits_total",
		Help: "Downloads that found no room in the cache (everything cached being read, or reserved by downloads) and waited for it, by result: admitted, or failed (no room within the wait's bound, 10 min)."},
		[]string{"result"})
	m.fallbacks = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_fallbacks_total",
		Help: "Downloads that left the swarm path, by reason (solo: every missing piece from the registry; stall, deadline: plain HTTP; no_torrent...)."}, []string{"reason"})
	m.mismatches = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_agent_digest_mismatches_total", Help: "Downloads discarded because their sha256 did not match."})
	m.downloads = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_agent_blob_downloads_total", Help: "Blob downloads started (single flight: one per blob however many requesters)."})
	m.swarm = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_swarm_received_bytes_total",
		Help: "Piece bytes received from other nodes over the data path, by kind: all, or useful (passed its check and was kept)."},
		[]string{"kind"})
	m.origin = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_registry_piece_bytes_total",
		Help: "Piece bytes fetched from the registry over the swarm path, by reason: share (this node's share), alone (no other node connected), steal (an idle node took a piece nobody was fetching), solo (the swarm stalled), range (a Range reader waited for it)."},
		[]string{"reason"})
	m.ranges = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_range_responses_total",
		Help: "Range responses of blobs being downloaded, by kind: early (sent before the blob was whole, each piece once its SHA-1 matched, in the present prefix or beyond it), stream (none was: the range reached the last byte, or the download has no piece hashes)."},
		[]string{"kind"})
	m.pulls = prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "shoal_agent_blob_download_duration_seconds",
		Help:    "Time from a download's start to its blob verified and cached, by source (p2p: through the swarm, http: plain HTTP).",
		Buckets: prometheus.ExponentialBuckets(0.05, 2, 17)}, []string{"source"})
	m.resumed = prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_agent_resumed_bytes_total",
		Help: "Bytes an interrupted download (agent killed or stopped, or download failed) left on disk that the next download of the blob kept: pieces whose SHA-1 matched, or a plain stream's prefix that hashed to its checkpoint."})
	m.reg.MustRegister(m.requests, m.ranges, m.roomWaits, m.pulls, m.resumed, progressCollector{&m.inflight}, m.swarm, m.origin, m.bytes, m.hits, m.misses, m.evictions, m.fallbacks, m.mismatches, m.downloads,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_agent_active_torrents", Help: "Torrents downloading or seeding."},
			func() float64 { return float64(a.activeTorrents()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "shoal_agent_uploaded_bytes_total", Help: "Blob bytes uploaded to other nodes since start."},
			func() float64 { return float64(a.uploadedBytes()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "shoal_agent_cache_used_bytes", Help: "Cache bytes used: cached blobs, the whole size of downloads under way (reserved before they write) and files kept to resume interrupted downloads; never above cache.maxBytes."},
			func() float64 { u, _ := a.store.Usage(); return float64(u) }),
		dataCollector{a.dataStats},
	)
	for _, s := range []string{sourcePeer, sourceRegistry, sourceCache} {
		m.bytes.WithLabelValues(s)
	}
	for _, src := range []string{"p2p", "http"} {
		m.pulls.WithLabelValues(src)
	}
	for _, r := range []string{"admitted", "failed"} {
		m.roomWaits.WithLabelValues(r)
	}
	for _, kind := range []string{"early", "stream"} {
		m.ranges.WithLabelValues(kind)
	}
	for _, why := range []string{"share", "alone", "steal", "solo", "range"} {
		m.origin.WithLabelValues(why)
	}
	for _, kind := range []string{"all", "useful"} {
		m.swarm.WithLabelValues(kind)
	}
	return m
}

var (
	dataAnswersDesc = prometheus.NewDesc("shoal_agent_data_answers_total",
		"Answers of this node's data path to other nodes' piece requests, by answer: served, busy (no upload slot free: the requester asks another node), refused (not held here, not a peer of the torrent, or a bad range).",
		[]string{"answer"}, nil)
	dataConnsDesc = prometheus.NewDesc("shoal_agent_data_connections_total",
		"Connections accepted by this node's data path, each a mutual-TLS handshake; growing with the answers, it means requesters do not reuse their connections.",
		nil, nil)
)

// dataCollector shows the data path's counters at scrape time.
type dataCollector struct{ stats func() peer.DataStats }

func (c dataCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- dataAnswersDesc
	ch <- dataConnsDesc
}

func (c dataCollector) Collect(ch chan<- prometheus.Metric) {
	st := c.stats()
	for _, a := range []struct {
		answer string
		n      int64
	}{{"served", st.Served}, {"busy", st.Busy}, {"refused", st.Refused}} {
		ch <- prometheus.MustNewConstMetric(dataAnswersDesc, prometheus.CounterValue, float64(a.n), a.answer)
	}
	ch <- prometheus.MustNewConstMetric(dataConnsDesc, prometheus.CounterValue, float64(st.Connections))
}

// mirrorRequests counts what runtimes ask the mirror, so an operator (and the
// runtime tests) can see that pulls reach the agent at all, and whether a
// runtime fetches layers in parallel Range requests (containerd 2's
// concurrent_layer_fetch_buffer) or whole.
func newMirrorRequests() *prometheus.CounterVec {
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_agent_mirror_requests_total",
		Help: "Requests to the mirror's /v2/ routes, by kind (base, manifest, blob, tags, referrers, other), method and ranged (true: the request had a Range header)."},
		[]string{"kind", "method", "ranged"})
	for _, k := range []string{"base", "manifest", "blob"} {
		for _, m := range []string{http.MethodGet, http.MethodHead} {
			c.WithLabelValues(k, m, "false")
		}
	}
	c.WithLabelValues("blob", http.MethodGet, "true")
	return c
}

// countMirrorRequest wraps the /v2/ handler without wrapping the
// ResponseWriter, so blob bodies still go out with sendfile.
func countMirrorRequest(c *prometheus.CounterVec, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		method := r.Method
		if method != http.MethodGet && method != http.MethodHead {
			method = "other" // bounded label values whatever clients send
		}
		ranged := "false"
		if r.Header.Get("Range") != "" {
			ranged = "true"
		}
		c.WithLabelValues(mirrorRequestKind(r.URL.Path), method, ranged).Inc()
		next(w, r)
	}
}

func mirrorRequestKind(path string) string {
	if path == "/v2" || path == "/v2/" {
		return "base"
	}
	rest := strings.TrimPrefix(path, "/v2/")
	kinds := map[string]string{"/blobs/": "blob", "/manifests/": "manifest", "/tags/": "tags", "/referrers/": "referrers"}
	best, kind := -1, "other"
	// The last of these segments decides, as in handleV2: a repository may
	// itself be named "blobs".
	for seg, k := range kinds {
		if i := strings.LastIndex(rest, seg); i > 0 && i > best {
			best, kind = i, k
		}
	}
	return kind
}
