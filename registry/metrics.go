package registry

import (
	"github.com/prometheus/client_golang/prometheus"
)

// metrics are the registry's own, on the Server's private registry, so two
// registries in one process (tests, `shoal run`) never share a counter.
type serverMetrics struct {
	redirects  *prometheus.CounterVec
	torrents   *prometheus.CounterVec
	pieces     *prometheus.CounterVec
	pieceBytes *prometheus.CounterVec
	seeding    prometheus.Gauge
	pushed     prometheus.Counter
}

func newMetrics(reg *prometheus.Registry, s *Server) *serverMetrics {
	m := &serverMetrics{
		redirects: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_torrent_redirects_total",
			Help: "Blob GETs answered with a redirect to torrent metadata, by result.",
		}, []string{"result"}),
		torrents: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_torrent_requests_total",
			Help: "Torrent metadata requests, by result.",
		}, []string{"result"}),
		pieces: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_piece_requests_total",
			Help: "Requests to the piece-range endpoint (" + BlobPath + "), by result.",
		}, []string{"result"}),
		pieceBytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_registry_piece_bytes_total",
			Help: "Blob bytes sent by the piece-range endpoint, by reader: file (the blob file, sendfile on plain TCP) or stream (other storage drivers).",
		}, []string{"reader"}),
		seeding: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_registry_seeding_torrents",
			Help: "Torrents the registry's seeder currently serves.",
		}),
		pushed: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_registry_manifest_pushes_seeded_total",
			Help: "Manifest pushes whose blobs were put into seeding.",
		}),
	}
	reg.MustRegister(m.redirects, m.torrents, m.pieces, m.pieceBytes)
	if !s.seeding {
		return m
	}
	// The seeder starts with Serve; until then (and after Close) these read
	// the values of no seeder.
	withSeeder := func(f func(*seeder) float64) func() float64 {
		return func() float64 {
			s.mu.Lock()
			sd := s.seeder
			s.mu.Unlock()
			if sd == nil {
				return 0
			}
			return f(sd)
		}
	}
	reg.MustRegister(m.seeding, m.pushed,
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name: "shoal_registry_seeder_uploaded_bytes_total",
			Help: "Blob bytes the registry's seeder sent to peers.",
		}, withSeeder(func(sd *seeder) float64 { return float64(sd.uploadedBytes()) })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "shoal_registry_seeder_open_files",
			Help: "Blob files the seeder holds open (at most seeder.maxopenfiles while none is being read).",
		}, withSeeder(func(sd *seeder) float64 { return float64(sd.files.open()) })),
	)
	return m
}
