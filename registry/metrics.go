package registry

import (
	"errors"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	redirects  *prometheus.CounterVec
	torrents   *prometheus.CounterVec
	pieces     *prometheus.CounterVec
	pieceBytes *prometheus.CounterVec
	seeding    prometheus.Gauge
	pushed     prometheus.Counter
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "registry", Name: "torrent_redirects_total",
			Help: "Blob GETs answered with a redirect to torrent metadata, by result.",
		}, []string{"result"}),
		torrents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "registry", Name: "torrent_requests_total",
			Help: "Torrent metadata requests, by result.",
		}, []string{"result"}),
		pieces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "registry", Name: "piece_requests_total",
			Help: "Requests to the piece-range endpoint (" + BlobPath + "), by result.",
		}, []string{"result"}),
		pieceBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "registry", Name: "piece_bytes_total",
			Help: "Blob bytes sent by the piece-range endpoint, by reader: file (the blob file, sendfile on plain TCP) or stream (other storage drivers).",
		}, []string{"reader"}),
		seeding: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "shoal", Subsystem: "registry", Name: "seeding_torrents",
			Help: "Torrents the registry's seeder currently serves.",
		}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "shoal", Subsystem: "registry", Name: "manifest_pushes_seeded_total",
			Help: "Manifest pushes whose blobs were put into seeding.",
		}),
	}
	m.redirects = register(reg, m.redirects)
	m.torrents = register(reg, m.torrents)
	m.pieces = register(reg, m.pieces)
	m.pieceBytes = register(reg, m.pieceBytes)
	m.seeding = register(reg, m.seeding)
	m.pushed = register(reg, m.pushed)
	return m
}

// register tolerates a second registry in one process (tests) by sharing
// the collector registered first.
func register[C prometheus.Collector](reg prometheus.Registerer, c C) C {
	if err := reg.Register(c); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			return are.ExistingCollector.(C)
		}
		panic(err)
	}
	return c
}
