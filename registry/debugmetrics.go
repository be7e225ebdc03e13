package registry

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/httpx"
)

// The debug listener has two shapes (see configs/registry.yml, http.debug).
//
// On loopback it is the upstream binary's debug server: pprof, expvar,
// /debug/health and, with prometheus.enabled, metrics. Beyond loopback —
// Harbor writes `http.debug.addr: :<metric.port>` with prometheus enabled
// so that its Prometheus scrapes the registry there — it serves the
// metrics path and nothing else. pprof's heap and goroutine dumps carry
// the process's memory (secrets, tokens), expvar prints the whole
// configuration (distribution publishes its redis block, password
// included, under /debug/vars), and /debug/health names storage errors:
// none of that may reach the network. Metrics are counters and names,
// the same Shoal already serves on the main listener's /metrics. One
// listener split by address rather than a second setting keeps Harbor's
// generated config working unchanged; pprof on such a registry is had by
// setting a loopback address (and losing the scrape) for the session.

// debugMetricsOnly checks http.debug: a loopback (or empty) address is the
// full debug server; any other is allowed only to serve metrics.
func debugMetricsOnly(d configuration.Debug) (bool, error) {
	err := debugserver.ValidateAddr(d.Addr)
	if err == nil {
		return false, nil
	}
	if !d.Prometheus.Enabled {
		return false, fmt.Errorf("registry config: http.debug.addr: %w; an address beyond loopback is allowed only for Prometheus metrics alone (http.debug.prometheus.enabled: true), never pprof", err)
	}
	if _, port, perr := net.SplitHostPort(d.Addr); perr != nil || port == "" {
		return false, fmt.Errorf("registry config: http.debug.addr %q: want host:port or :port", d.Addr)
	}
	return true, nil
}

// promHandler serves distribution's metrics — its storage, notification
// and proxy series, which its packages register once per process on the
// default registry at init (with the Go and process collectors), and this
// Server's registry_http_* (instrumentRoutes) — together with the
// registry's own shoal_registry_* series, so one scrape of the debug port
// sees all of them.
func (s *Server) promHandler() http.Handler {
	return promhttp.HandlerFor(prometheus.Gatherers{prometheus.DefaultGatherer, s.appMetrics, s.metricsReg}, promhttp.HandlerOpts{})
}

// metricsPath is http.debug.prometheus.path, "/metrics" by default.
func (s *Server) metricsPath() string {
	if p := s.cfg.HTTP.Debug.Prometheus.Path; p != "" {
		return p
	}
	return "/metrics"
}

// metricsOnlyHandler answers the metrics path and 404s everything else.
func (s *Server) metricsOnlyHandler() http.Handler {
	path, prom, notFound := s.metricsPath(), s.promHandler(), httpx.NotFound()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if (r.URL.Path == path || (strings.HasSuffix(path, "/") && strings.HasPrefix(r.URL.Path, path))) &&
			(r.Method == http.MethodGet || r.Method == http.MethodHead) {
			prom.ServeHTTP(w, r)
			return
		}
		notFound.ServeHTTP(w, r)
	})
}

// serveMetricsOnly listens on addr and serves metricsOnlyHandler until ctx
// ends.
func (s *Server) serveMetricsOnly(ctx context.Context, addr string) (net.Addr, error) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	srv := httpx.NewServer(s.metricsOnlyHandler(), s.log)
	go func() {
		if err := httpx.Serve(ctx, srv, l); err != nil {
			s.log.WithError(err).Error("debug metrics listener stopped")
		}
	}()
	s.log.WithField("addr", l.Addr().String()).WithField("path", s.metricsPath()).
		Info("http.debug.addr is beyond loopback: serving Prometheus metrics only there (pprof, expvar and /debug/health need a loopback http.debug.addr)")
	return l.Addr(), nil
}
