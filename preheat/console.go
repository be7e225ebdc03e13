package preheat

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/traffic"
)

// The admin console: a page served at /console/ with its own small JSON
// API under /console/api/ and a server-sent event stream. It reads the
// same Store as every other endpoint, so any replica shows the same state.
//
// Who may use it: with apiTokens configured, whoever logs in with one of
// them (a cookie session) or sends one as a bearer token. With no tokens
// it is open, but only when the API listens on loopback and the request
// comes from loopback for a loopback host name, so that `shoal run` works
// at once while a console on a network address never runs unauthenticated.

//go:embed console
var consoleFiles embed.FS

const (
	sessionCookie = "shoal_console"
	sessionTTL    = 12 * time.Hour
	// consoleHeader must accompany every console write made with a cookie:
	// a cross-site form cannot set it, and a cross-site script setting it
	// needs a CORS preflight the console never grants.
	consoleHeader = "X-Shoal-Console"
	// trafficWindow is how far back the console's chart reaches.
	trafficWindow = 6 * time.Hour
)

func (s *Service) consoleRoutes(r *mux.Router) {
	static, _ := fs.Sub(consoleFiles, "console")
	r.Handle("/console", http.RedirectHandler("/console/", http.StatusMovedPermanently)).Methods(http.MethodGet)
	r.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		serveConsoleFile(w, static, "index.html")
	}).Methods(http.MethodGet)
	r.HandleFunc("/console/assets/{file}", func(w http.ResponseWriter, r *http.Request) {
		serveConsoleFile(w, static, "assets/"+mux.Vars(r)["file"])
	}).Methods(http.MethodGet)

	r.HandleFunc("/console/api/session", s.handleSession).Methods(http.MethodGet)
	r.HandleFunc("/console/api/login", s.handleLogin).Methods(http.MethodPost)
	r.HandleFunc("/console/api/logout", s.handleLogout).Methods(http.MethodPost)
	c := s.consoleAuth
	r.Handle("/console/api/overview", c(s.handleOverview)).Methods(http.MethodGet)
	r.Handle("/console/api/traffic", c(s.handleTraffic)).Methods(http.MethodGet)
	r.Handle("/console/api/swarms", c(s.handleSwarms)).Methods(http.MethodGet)
	r.Handle("/console/api/jobs", c(s.handleCreate("console"))).Methods(http.MethodPost)
	r.Handle("/console/api/jobs/{id}", c(s.handleGet)).Methods(http.MethodGet)
	r.Handle("/console/api/jobs/{id}", c(s.handleCancel)).Methods(http.MethodDelete)
	r.Handle("/console/api/events", c(s.handleEvents)).Methods(http.MethodGet)
}

func serveConsoleFile(w http.ResponseWriter, static fs.FS, name string) {
	b, err := fs.ReadFile(static, name)
	if err != nil {
		httpx.WriteError(w, http.StatusNotFound, "", "no such console file: "+name)
		return
	}
	ct := "application/octet-stream"
	switch {
	case strings.HasSuffix(name, ".html"):
		ct = "text/html; charset=utf-8"
	case strings.HasSuffix(name, ".js"):
		ct = "text/javascript; charset=utf-8"
	case strings.HasSuffix(name, ".css"):
		ct = "text/css; charset=utf-8"
	case strings.HasSuffix(name, ".svg"):
		ct = "image/svg+xml"
	}
	h := w.Header()
	h.Set("Content-Type", ct)
	h.Set("Cache-Control", "no-cache")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY")
	h.Set("Content-Security-Policy", "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; frame-ancestors 'none'")
	h.Set("Referrer-Policy", "no-referrer")
	_, _ = w.Write(b)
}

// openAccess reports whether the console may run without tokens for r,
// and why not. It goes by the address Serve's listener is bound to, not by
// the configured one: the caller may have handed Serve another listener.
func (s *Service) openAccess(r *http.Request) (bool, string) {
	addr := ""
	if p := s.listenAddr.Load(); p != nil {
		addr = *p
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !isLoopbackName(host) {
		return false, "preheat needs apiTokens when it listens beyond loopback (addr: " + addr + ")"
	}
	rh, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !isLoopbackName(rh) {
		return false, "without apiTokens preheat only answers loopback clients"
	}
	// A DNS-rebound name pointing at 127.0.0.1 must not reach an open
	// console: the browser would treat the page as that site's.
	hh := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		hh = h
	}
	if !isLoopbackName(hh) {
		return false, "without apiTokens preheat only answers requests for a loopback host (127.0.0.1, localhost, [::1])"
	}
	return true, ""
}

func isLoopbackName(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// sessionValue is "<expiry unix>.<hmac>", keyed by the API token it was
// made with: stateless, so every replica with the same tokens accepts it,
// and removing a token from the config ends its sessions.
func sessionValue(token string, exp time.Time) string {
	e := strconv.FormatInt(exp.Unix(), 10)
	m := hmac.New(sha256.New, []byte(token))
	m.Write([]byte("shoal-console-session\x00" + e))
	return e + "." + hex.EncodeToString(m.Sum(nil))
}

func (s *Service) validSession(v string, now time.Time) bool {
	e, _, ok := strings.Cut(v, ".")
	exp, err := strconv.ParseInt(e, 10, 64)
	if !ok || err != nil || now.Unix() >= exp || exp > now.Add(sessionTTL+time.Minute).Unix() {
		return false
	}
	for _, t := range s.cfg.APITokens.Values() {
		if hmac.Equal([]byte(v), []byte(sessionValue(t, time.Unix(exp, 0)))) {
			return true
		}
	}
	return false
}

func (s *Service) bearerOK(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	return ok && s.tokenOK(strings.TrimSpace(got))
}

func (s *Service) tokenOK(got string) bool { return s.cfg.APITokens.Match(got) }

// consoleAuth admits a console API call (see the package comment above).
func (s *Service) consoleAuth(h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(s.cfg.APITokens) == 0 {
			if ok, why := s.openAccess(r); !ok {
				httpx.WriteError(w, http.StatusForbidden, "", why)
				return
			}
		} else if !s.bearerOK(r) {
			c, err := r.Cookie(sessionCookie)
			if err != nil || !s.validSession(c.Value, s.now()) {
				httpx.WriteError(w, http.StatusUnauthorized, "", "log in with a preheat API token")
				return
			}
		}
		if r.Method != http.MethodGet && r.Header.Get(consoleHeader) == "" && !s.bearerOK(r) {
			httpx.WriteError(w, http.StatusForbidden, "", "console writes need the "+consoleHeader+" header")
			return
		}
		h(w, r)
	})
}

func (s *Service) handleSession(w http.ResponseWriter, r *http.Request) {
	out := map[string]any{"auth": "token", "loggedIn": false}
	if len(s.cfg.APITokens) == 0 {
		ok, why := s.openAccess(r)
		out["auth"], out["loggedIn"] = "open", ok
		if !ok {
			out["error"] = why
		}
	} else if c, err := r.Cookie(sessionCookie); err == nil && s.validSession(c.Value, s.now()) {
		out["loggedIn"] = true
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

func (s *Service) handleLogin(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get(consoleHeader) == "" {
		httpx.WriteError(w, http.StatusForbidden, "", "log in from the console page")
		return
	}
	if len(s.cfg.APITokens) == 0 {
		httpx.WriteError(w, http.StatusBadRequest, "", "no apiTokens are configured: there is nothing to log in with")
		return
	}
	if !s.logins.allow(clientAddr(r), s.now()) {
		w.Header().Set("Retry-After", strconv.Itoa(int(loginEvery/time.Second)))
		httpx.WriteError(w, http.StatusTooManyRequests, "", "too many login attempts; wait and try again")
		return
	}
	var req struct {
		Token string `json:"token"`
	}
	if err := decode(r, &req); err != nil {
		s.writeError(w, err)
		return
	}
	if strings.TrimSpace(req.Token) == "" {
		httpx.WriteError(w, http.StatusBadRequest, "", "enter an API token")
		return
	}
	var token string
	for _, t := range s.cfg.APITokens.Values() {
		if hmac.Equal([]byte(strings.TrimSpace(req.Token)), []byte(t)) {
			token = t
		}
	}
	if token == "" {
		s.log.WithField("remote", r.RemoteAddr).Warn("console login with a wrong token")
		httpx.WriteError(w, http.StatusUnauthorized, "", "that is not one of the preheat API tokens")
		return
	}
	exp := s.now().Add(sessionTTL)
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: sessionValue(token, exp), Path: "/console/",
		Expires: exp, HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

func (s *Service) handleLogout(w http.ResponseWriter, r *http.Request) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: "", Path: "/console/", MaxAge: -1,
		HttpOnly: true, Secure: r.TLS != nil, SameSite: http.SameSiteStrictMode})
	w.WriteHeader(http.StatusNoContent)
}

// JobSummary is a job as the console's list shows it.
type JobSummary struct {
	ID        int64     `json:"id"`
	State     JobState  `json:"state"`
	Error     string    `json:"error,omitempty"`
	Image     string    `json:"image"`
	Groups    []string  `json:"groups,omitempty"`
	Source    string    `json:"source,omitempty"`
	Nodes     int       `json:"nodes"`
	Blobs     int       `json:"blobs"`
	CreatedAt time.Time `json:"createdAt"`
}

// Overview is what the console's nodes and jobs views draw.
type Overview struct {
	Nodes   []NodeView     `json:"nodes"`
	Jobs    []JobSummary   `json:"jobs"`
	Traffic []TrafficPoint `json:"traffic"`
	Replica string         `json:"replica"`
}

func (s *Service) overview(ctx context.Context) (*Overview, error) {
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	jobs, err := s.store.ListJobs(ctx, 50)
	if err != nil {
		return nil, err
	}
	traffic, err := s.store.Traffic(ctx, s.now().Add(-trafficWindow))
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := &Overview{Nodes: []NodeView{}, Jobs: []JobSummary{}, Traffic: traffic, Replica: s.id}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, NodeView{Node: n, Alive: n.Alive(now)})
	}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, JobSummary{ID: j.ID, State: j.State, Error: j.Error, Image: j.Image, Groups: j.Groups,
			Source: j.Source, Nodes: len(j.Targets), Blobs: len(j.Blobs), CreatedAt: j.CreatedAt})
	}
	return out, nil
}

func (s *Service) handleOverview(w http.ResponseWriter, r *http.Request) {
	o, err := s.overview(r.Context())
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, o)
}

func (s *Service) handleTraffic(w http.ResponseWriter, r *http.Request) {
	since := s.now().Add(-trafficWindow)
	if v := r.URL.Query().Get("minutes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 60*24*31 {
			httpx.WriteError(w, http.StatusBadRequest, "", "minutes must be an integer from 1 to 44640")
			return
		}
		since = s.now().Add(-time.Duration(n) * time.Minute)
	}
	pts, err := s.store.Traffic(r.Context(), since)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"traffic": pts})
}

// recordTraffic adds a heartbeat's byte counters to the per-minute
// totals. A failure loses a point of the chart, not the heartbeat.
func (s *Service) recordTraffic(ctx context.Context, hb nodeapi.Heartbeat) {
	if hb.StartedAt.IsZero() {
		return // an agent that does not report counters
	}
	now := s.now()
	t := NodeTraffic{StartedAt: hb.StartedAt, FromRegistry: hb.BytesFromRegistry, FromPeers: hb.BytesFromPeers,
		Fresh: now.Sub(hb.StartedAt) < traffic.Freshness}
	if err := s.store.RecordTraffic(ctx, hb.ID, t, now, max(s.cfg.Retention, trafficWindow)); err != nil {
		s.log.WithError(err).WithField("node", hb.ID).Warn("cannot record node traffic")
	}
}

// handleEvents streams the overview (event "overview") and, with ?job=ID,
// that job's view (event "job") whenever they change. It reads the
// shared store once a second, so it shows the work of every replica.
func (s *Service) handleEvents(w http.ResponseWriter, r *http.Request) {
	fl, ok := w.(http.Flusher)
	if !ok {
		httpx.WriteError(w, http.StatusInternalServerError, "", "streaming unsupported")
		return
	}
	var job int64
	if v := r.URL.Query().Get("job"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n <= 0 {
			httpx.WriteError(w, http.StatusBadRequest, "", "job must be a positive integer")
			return
		}
		job = n
	}
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	fl.Flush()

	ctx := r.Context()
	var lastO, lastJ []byte
	send := func(event string, v any, last *[]byte) bool {
		b, err := json.Marshal(v)
		if err != nil || bytes.Equal(b, *last) {
			return err == nil
		}
		*last = b
		if _, err := fmt.Fprintf(w, "event: %s\ndata: %s\n\n", event, b); err != nil {
			return false
		}
		fl.Flush()
		return true
	}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	idle := 0
	for {
		o, err := s.overview(ctx)
		if err != nil {
			o = nil
			if !send("problem", httpx.ErrorBody{Error: "store: " + err.Error(), Code: httpx.CodeUnavailable}, new([]byte)) {
				return
			}
		}
		if o != nil && !send("overview", o, &lastO) {
			return
		}
		if job > 0 {
			j, err := s.store.GetJob(ctx, job)
			switch {
			case errors.Is(err, ErrNotFound):
				if !send("problem", httpx.ErrorBody{Error: fmt.Sprintf("job %d not found (finished jobs expire after %s)", job, s.cfg.Retention), Code: httpx.CodeNotFound}, &lastJ) {
					return
				}
			case err == nil:
				if v, err := s.view(ctx, j); err == nil && !send("job", v, &lastJ) {
					return
				}
			}
		}
		// A comment now and then keeps proxies from closing a quiet stream.
		if idle++; idle%15 == 0 {
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
		select {
		case <-ctx.Done():
			return
		case <-s.life.streamsDone:
			return
		case <-tick.C:
		}
	}
}
