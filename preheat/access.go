package preheat

import (
	"mime"
	"net/http"
	"net/url"
	"strings"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
)

// Who may call what (docs/security.md). One rule for every route but
// heartbeats (cluster certificates) and /metrics, /healthz:
//
//   - with tokens configured for the route, the caller presents one;
//   - without, preheat listens on loopback (Config.Validate and Serve refuse
//     anything else), and the route answers like the console does: loopback
//     client, loopback Host (no DNS rebinding), and for writes no
//     cross-site request (Origin, Sec-Fetch-Site) and a JSON body, which a
//     cross-site form or no-preflight fetch cannot send.

// routeAuth guards a route with tokens, or with the loopback guards when
// tokens is empty. write adds the cross-site checks; jsonBody requires a
// JSON content type (in the open mode, where it is what stops a simple
// cross-site POST).
func (s *Service) routeAuth(tokens config.Tokens, write, jsonBody bool, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(tokens) > 0 {
			if !tokens.Match(presentedToken(r)) {
				w.Header().Set("WWW-Authenticate", `Bearer realm="shoal-preheat"`)
				httpx.WriteError(w, http.StatusUnauthorized, "", "missing or invalid bearer token")
				return
			}
			h(w, r)
			return
		}
		if ok, why := s.openAccess(r); !ok {
			httpx.WriteError(w, http.StatusForbidden, "", why)
			return
		}
		if write {
			if why := crossSite(r); why != "" {
				httpx.WriteError(w, http.StatusForbidden, "", why)
				return
			}
			if jsonBody && !isJSON(r.Header.Get("Content-Type")) {
				httpx.WriteError(w, http.StatusUnsupportedMediaType, "", "send the body as application/json")
				return
			}
		}
		h(w, r)
	})
}

// presentedToken is "Authorization: Bearer <token>", or the bare header
// value, as Harbor webhooks send their auth_header verbatim.
func presentedToken(r *http.Request) string {
	got := strings.TrimSpace(r.Header.Get("Authorization"))
	if after, ok := strings.CutPrefix(got, "Bearer "); ok {
		got = strings.TrimSpace(after)
	}
	return got
}

// crossSite says why a write must be refused as coming from another site
// ("" when it may not). Browsers send Sec-Fetch-Site and Origin on
// cross-site requests; tools (curl, shoal preheat) send neither.
func crossSite(r *http.Request) string {
	switch r.Header.Get("Sec-Fetch-Site") {
	case "", "same-origin", "none":
	default:
		return "cross-site requests may not write to preheat"
	}
	if o := r.Header.Get("Origin"); o != "" {
		u, err := url.Parse(o)
		if err != nil || !isLoopbackName(u.Hostname()) || !strings.EqualFold(u.Host, r.Host) {
			return "requests from another origin may not write to preheat"
		}
	}
	return ""
}

// isJSON accepts application/json and the +json types (distribution's
// events envelope).
func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}
