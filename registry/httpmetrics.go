package registry

import (
	"net/http"
	"strings"

	dprom "github.com/distribution/distribution/v3/metrics"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	gometrics "github.com/docker/go-metrics"
	"github.com/gorilla/mux"
	"github.com/prometheus/client_golang/prometheus"
)

// distribution's route names, each instrumented as handlers.NewApp does.
var appRoutes = []string{
	v2.RouteNameBase, v2.RouteNameManifest, v2.RouteNameCatalog, v2.RouteNameTags,
	v2.RouteNameBlob, v2.RouteNameBlobUpload, v2.RouteNameBlobUploadChunk,
}

// instrumentRoutes gives next the registry_http_* series that
// handlers.NewApp adds with http.debug.prometheus.enabled (one set per
// route, the route name as the handler label, built by the same
// docker/go-metrics calls), registered on reg. Upstream registers them on
// the process-global registry on every NewApp, so a second registry in one
// process (two Servers, or a test run twice with -count) panicked with a
// duplicate registration; New builds distribution's app with prometheus off
// and instruments it here instead.
func instrumentRoutes(reg prometheus.Registerer, prefix string, next http.Handler) (http.Handler, error) {
	router := v2.RouterWithPrefix(prefix)
	byRoute := make(map[string]http.Handler, len(appRoutes))
	for _, name := range appRoutes {
		ns := gometrics.NewNamespace(dprom.NamespacePrefix, "http", nil)
		hm := ns.NewDefaultHttpMetrics(strings.ReplaceAll(name, "-", "_"))
		if err := reg.Register(ns); err != nil {
			return nil, err
		}
		byRoute[name] = gometrics.InstrumentHandler(hm, next)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m mux.RouteMatch
		if router.Match(r, &m) && m.Route != nil {
			if h, ok := byRoute[m.Route.GetName()]; ok {
				h.ServeHTTP(w, r)
				return
			}
		}
		next.ServeHTTP(w, r)
	}), nil
}
