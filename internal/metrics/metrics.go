// Package metrics is the one Prometheus convention of Shoal's components:
//
//   - every component owns a private *prometheus.Registry (never the
//     process-global default registerer, which would make a second
//     component in one process, or a second instance in a test, panic on
//     duplicate registration);
//   - names are shoal_<component>_<thing>_<unit>, counters end in _total,
//     sizes are _bytes and durations _seconds;
//   - the same concept has the same label name everywhere: "source" is where
//     bytes came from (cache, peer, registry, http), "result" an outcome;
//   - Go runtime and process collectors exist once per process
//     (NewProcessRegistry, made by the binary) and every component's
//     /metrics serves them next to its own (Handler);
//   - every metric is listed in docs/metrics.md, which metricstest checks.
package metrics

import (
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// NewProcessRegistry returns a registry with the Go runtime and process
// collectors. The binary makes one and hands it to every component it runs.
func NewProcessRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves a component's registry together with the process's (nil:
// the component's alone, as in tests that build a component directly).
func Handler(component, process prometheus.Gatherer) http.Handler {
	var g prometheus.Gatherer = component
	if process != nil {
		g = prometheus.Gatherers{component, process}
	}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}
