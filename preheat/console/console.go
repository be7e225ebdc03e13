// Package console is preheat's admin console: a page served at /console/
// with its own small JSON API under /console/api/ and a server-sent event
// stream. It owns the page, who may use it (sessions, login, the console
// write header) and the stream; what it shows and the job calls are the
// service's (Data, Routes' api), read from the same Store as every other
// endpoint, so any replica shows the same state.
//
// Who may use it: with API tokens configured, whoever logs in with one of
// them (a cookie session) or sends one as a bearer token. With no tokens
// it is open, but only when preheat's Access.Open says so (the API listens
// on loopback and the request comes from loopback for a loopback host
// name), so that `shoal run` works at once while a console on a network
// address never runs unauthenticated.
package console

import (
	"bytes"
	"context"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
)

//go:embed index.html assets
var files embed.FS

const (
	sessionCookie = "shoal_console"
	sessionTTL    = 12 * time.Hour
	// Header must accompany every console write made with a cookie: a
	// cross-site form cannot set it, and a cross-site script setting it
	// needs a CORS preflight the console never grants.
	Header = "X-Shoal-Console"
	// TrafficWindow is how far back the console's chart reaches.
	TrafficWindow = 6 * time.Hour
)

// Data is what the console shows.
type Data interface {
	// Overview is the nodes and jobs views' data.
	Overview(ctx context.Context) (any, error)
	// Job is one job's view; an error wrapping NotFound when it does not
	// exist (or expired).
	Job(ctx context.Context, id int64) (any, error)
}

// Deps are what a Console is built from.
type Deps struct {
	// Tokens are the API tokens; none means the open mode.
	Tokens config.Tokens
	// Open reports whether r may use the console without tokens, and why
	// not.
	Open func(r *http.Request) (bool, string)
	Data Data
	// NotFound is the error Data.Job wraps for a job that does not exist.
	NotFound error
	// Retention is how long finished jobs are kept, for the stream's
	// "not found" problem.
	Retention time.Duration
	// Decode reads a JSON request body; Fail answers an error of it.
	Decode func(r *http.Request, v any) error
	Fail   func(w http.ResponseWriter, err error)
	Now    func() time.Time
	Log    *logrus.Entry
	// Done closes when the server shuts down, ending event streams, which
	// would otherwise hold Shutdown to its timeout.
	Done <-chan struct{}
}

// Console serves the console's routes.
type Console struct {
	d      Deps
	logins *limiter
}

// New returns a console; it starts nothing.
func New(d Deps) *Console { return &Console{d: d, logins: newLimiter()} }

// API are the service's handlers the console's API calls, served behind
// the console's access checks.
type API struct {
	Overview, Traffic, Swarms http.HandlerFunc
	Create, Get, Cancel       http.HandlerFunc
}

// Routes adds the console's routes to r.
func (c *Console) Routes(r *mux.Router, api API) {
	static, _ := fs.Sub(files, ".")
	r.Handle("/console", http.RedirectHandler("/console/", http.StatusMovedPermanently)).Methods(http.MethodGet)
	r.HandleFunc("/console/", func(w http.ResponseWriter, r *http.Request) {
		serveFile(w, static, "index.html")
	}).Methods(http.MethodGet)
	r.HandleFunc("/console/assets/{file}", func(w http.ResponseWriter, r *http.Request) {
		serveFile(w, static, "assets/"+mux.Vars(r)["file"])
	}).Methods(http.MethodGet)

	r.HandleFunc("/console/api/session", c.handleSession).Methods(http.MethodGet)
	r.HandleFunc("/console/api/login", c.handleLogin).Methods(http.MethodPost)
	r.HandleFunc("/console/api/logout", c.handleLogout).Methods(http.MethodPost)
	a := c.auth
	r.Handle("/console/api/overview", a(api.Overview)).Methods(http.MethodGet)
	r.Handle("/console/api/traffic", a(api.Traffic)).Methods(http.MethodGet)
	r.Handle("/console/api/swarms", a(api.Swarms)).Methods(http.MethodGet)
	r.Handle("/console/api/jobs", a(api.Create)).Methods(http.MethodPost)
	r.Handle("/console/api/jobs/{id}", a(api.Get)).Methods(http.MethodGet)
	r.Handle("/console/api/jobs/{id}", a(api.Cancel)).Methods(http.MethodDelete)
	r.Handle("/console/api/events", a(c.handleEvents)).Methods(http.MethodGet)
}

func serveFile(w http.ResponseWriter, static fs.FS, name string) {
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

// stream writes server-sent events, each only when it changed since the
// last one of its kind.
type stream struct {
	w    http.ResponseWriter
	fl   http.Flusher
	last map[string][]byte
}

// send writes event unless v is what was last sent as key; false when the
// client is gone.
func (s *stream) send(event, key string, v any) bool {
	b, err := json.Marshal(v)
	if err != nil || bytes.Equal(b, s.last[key]) {
		return err == nil
	}
	s.last[key] = b
	if _, err := fmt.Fprintf(s.w, "event: %s\ndata: %s\n\n", event, b); err != nil {
		return false
	}
	s.fl.Flush()
	return true
}

// handleEvents streams the overview (event "overview") and, with ?job=ID,
// that job's view (event "job") whenever they change. It reads the
// shared store once a second, so it shows the work of every replica.
func (c *Console) handleEvents(w http.ResponseWriter, r *http.Request) {
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
	st := &stream{w: w, fl: fl, last: map[string][]byte{}}
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for idle := 1; ; idle++ {
		if !c.sendState(ctx, st, job) {
			return
		}
		// A comment now and then keeps proxies from closing a quiet stream.
		if idle%15 == 0 {
			if _, err := fmt.Fprint(w, ": keepalive\n\n"); err != nil {
				return
			}
			fl.Flush()
		}
		select {
		case <-ctx.Done():
			return
		case <-c.d.Done:
			return
		case <-tick.C:
		}
	}
}

// sendState sends the overview and the job's view (job > 0) when they
// changed, or what keeps them from being read; false when the client is
// gone.
func (c *Console) sendState(ctx context.Context, st *stream, job int64) bool {
	o, err := c.d.Data.Overview(ctx)
	if err != nil {
		delete(st.last, "problem") // every failed read is reported
		if !st.send("problem", "problem", httpx.ErrorBody{Error: "store: " + err.Error(), Code: httpx.CodeUnavailable}) {
			return false
		}
	} else if !st.send("overview", "overview", o) {
		return false
	}
	if job <= 0 {
		return true
	}
	v, err := c.d.Data.Job(ctx, job)
	switch {
	case errors.Is(err, c.d.NotFound):
		return st.send("problem", "job", httpx.ErrorBody{Error: fmt.Sprintf("job %d not found (finished jobs expire after %s)", job, c.d.Retention), Code: httpx.CodeNotFound})
	case err == nil:
		return st.send("job", "job", v)
	}
	return true
}
