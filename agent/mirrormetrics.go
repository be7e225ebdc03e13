package agent

import (
	"net/http"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
)

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
