package tracker

import (
	"time"

	"github.com/anacrolix/torrent/tracker"
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are per Server (own registry) so several trackers can live in one
// process (tests, `shoal run`) without colliding; the process's Go and
// process collectors are the binary's (Deps.ProcessMetrics). Every label
// has a small fixed value set: nothing is labelled by infohash or peer.
type metrics struct {
	announces    *prometheus.CounterVec
	failures     *prometheus.CounterVec
	rejected     *prometheus.CounterVec
	scrapes      prometheus.Counter
	tokenChecks  prometheus.Counter
	swarmSize    prometheus.Histogram
	handedOut    prometheus.Histogram
	storeLatency *prometheus.HistogramVec
	storeUp      prometheus.Gauge
	announceTime prometheus.Histogram

	rejectedSignatures *prometheus.CounterVec
	// Children resolved once: label lookups per announce showed in
	// profiles.
	failBadRequest, failToken, failStore, failSignature prometheus.Counter
	events                                              [4]prometheus.Counter
}

// announceEvent is the announces counter of an event.
func (m *metrics) announceEvent(e tracker.AnnounceEvent) prometheus.Counter {
	if int(e) >= 0 && int(e) < len(m.events) {
		return m.events[e]
	}
	return m.announces.WithLabelValues(eventLabel(e))
}

// latencyBuckets suit both stores: sub-millisecond for memory, a few
// milliseconds for Redis, up to the request timeout's order.
var latencyBuckets = []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1}

// newMetrics registers the tracker's metrics on reg; store ("memory",
// "redis") labels the store's own.
func newMetrics(reg prometheus.Registerer, store string) *metrics {
	m := &metrics{
		announces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_announces_total",
			Help: "Announces accepted, by event (none, started, completed, stopped).",
		}, []string{"event"}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_failures_total",
			Help: "Announces and scrapes answered with a failure reason, by reason (bad_request, token, signature, store).",
		}, []string{"reason"}),
		rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_tracker_rejected_tokens_total",
			Help: "Announce and scrape tokens rejected, by reason (missing, malformed, expired, invalid).",
		}, []string{"reason"}),
		scrapes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_tracker_scrapes_total",
			Help: "Scrape requests served.",
		}),
		tokenChecks: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_tracker_token_checks_total",
			Help: "Token signature checks (one per purpose tried), the tracker's per-request HMAC work.",
		}),
		swarmSize: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_tracker_swarm_peers",
			Help:    "Peers (complete + incomplete) in the swarm announced to, observed per announce.",
			Buckets: prometheus.ExponentialBuckets(1, 4, 9), // 1 .. 65536
		}),
		handedOut: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_tracker_returned_peers",
			Help:    "Peers returned per announce.",
			Buckets: []float64{0, 1, 5, 10, 25, 50, 100, 200, 500},
		}),
		storeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:        "shoal_tracker_store_seconds",
			Help:        "Latency of peer store round trips (Redis commands for the redis store), by operation.",
			Buckets:     latencyBuckets,
			ConstLabels: prometheus.Labels{"store": store},
		}, []string{"op"}),
		storeUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Name:        "shoal_tracker_store_up",
			Help:        "1 if the last peer store operation succeeded.",
			ConstLabels: prometheus.Labels{"store": store},
		}),
		announceTime: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_tracker_announce_seconds",
			Help:    "Announce handling time, parsing to response.",
			Buckets: latencyBuckets,
		}),
	}
	m.rejectedSignatures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_tracker_rejected_signatures_total",
		Help: "Announces refused for their member signature, by reason (missing, malformed, stale, invalid).",
	}, []string{"reason"})
	reg.MustRegister(m.announces, m.failures, m.rejected, m.scrapes, m.tokenChecks, m.swarmSize, m.handedOut,
		m.storeLatency, m.storeUp, m.announceTime, m.rejectedSignatures)
	m.failBadRequest = m.failures.WithLabelValues("bad_request")
	m.failToken = m.failures.WithLabelValues("token")
	m.failStore = m.failures.WithLabelValues("store")
	m.failSignature = m.failures.WithLabelValues("signature")
	for e := range m.events {
		m.events[e] = m.announces.WithLabelValues(eventLabel(tracker.AnnounceEvent(e)))
	}
	m.storeUp.Set(1)
	return m
}

func (m *metrics) observeStore(op string, d time.Duration, err error) {
	m.storeLatency.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		m.storeUp.Set(0)
	} else {
		m.storeUp.Set(1)
	}
}
