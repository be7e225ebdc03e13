package preheat

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/harbor"
	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// handler is the full HTTP API: shoal's own /api/v1, the Harbor provider
// endpoints (Dragonfly new and legacy, Kraken), the console, /metrics and
// /healthz.
func (s *Service) handler() http.Handler {
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	tok := s.cfg.APITokens
	read := func(h http.HandlerFunc) http.Handler { return s.routeAuth(tok, false, false, h) }
	write := func(h http.HandlerFunc) http.Handler { return s.routeAuth(tok, true, true, h) }
	cancel := func(h http.HandlerFunc) http.Handler { return s.routeAuth(tok, true, false, h) }
	r.HandleFunc(nodeapi.HeartbeatPath, s.handleHeartbeat).Methods(http.MethodPost)
	r.Handle("/api/v1/nodes", read(s.handleNodes)).Methods(http.MethodGet)
	r.Handle("/api/v1/nodes/{id}", s.requireToken(tok, s.handleForgetNode)).Methods(http.MethodDelete)
	r.Handle("/api/v1/groups", read(s.handleGroups)).Methods(http.MethodGet)
	r.Handle("/api/v1/jobs", write(s.handleCreate("api"))).Methods(http.MethodPost)
	r.Handle("/api/v1/jobs", read(s.handleList)).Methods(http.MethodGet)
	r.Handle("/api/v1/jobs/{id}", read(s.handleGet)).Methods(http.MethodGet)
	r.Handle("/api/v1/jobs/{id}", cancel(s.handleCancel)).Methods(http.MethodDelete)
	push := pushRoutes{errorWriter: errorWriter{s.log}, translate: s.up.push, krakenGroups: s.cfg.Harbor.KrakenGroups(),
		seen: s.store, now: s.now, create: s.CreateJob}
	r.Handle("/api/v1/webhooks/distribution", write(push.handleDistribution)).Methods(http.MethodPost)
	r.Handle("/api/v1/webhooks/harbor", write(push.handleHarbor)).Methods(http.MethodPost)

	// The Harbor provider routes exist only when Harbor is configured:
	// with tokens (its OAUTH mode) or, on loopback, harbor.auth: none.
	if s.cfg.harborEnabled() {
		ht := s.cfg.Harbor.Tokens
		hp := harborRoutes{errorWriter: errorWriter{s.log}, cfg: s.cfg.Harbor, jobs: s.store, progress: s.store, create: s.CreateJob}
		// Harbor calls the health endpoints with credentials too, and a
		// health check that passes with a bad token would hide a
		// misconfiguration until the first preheat.
		hr := func(h http.HandlerFunc) http.Handler { return s.routeAuth(ht, false, false, h) }
		hw := func(h http.HandlerFunc) http.Handler { return s.routeAuth(ht, true, false, h) }
		ok := func(w http.ResponseWriter, r *http.Request) { httpx.WriteJSON(w, http.StatusOK, "OK") }
		r.Handle("/healthy", hr(ok)).Methods(http.MethodGet)
		r.Handle("/oapi/v1/jobs", hw(hp.handleDragonflyCreate)).Methods(http.MethodPost)
		r.Handle("/oapi/v1/jobs/{id}", hr(hp.handleDragonflyGet)).Methods(http.MethodGet)
		r.Handle("/_ping", hr(ok)).Methods(http.MethodGet)
		r.Handle("/preheats", hw(hp.handleLegacyCreate)).Methods(http.MethodPost)
		r.Handle("/preheats/{id}", hr(hp.handleLegacyGet)).Methods(http.MethodGet)
		r.Handle("/health", hr(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			_, _ = io.WriteString(w, "OK\n")
		})).Methods(http.MethodGet)
		r.Handle("/registry/notifications", hw(push.handleKraken)).Methods(http.MethodPost)
	}

	s.consoleRoutes(r)

	r.Handle("/metrics", metrics.Handler(s.metrics.reg, s.metrics.process)).Methods(http.MethodGet)
	// The tracker is not checked: preheat works without it (only the
	// console's Swarms view reads it), so its outage must not make
	// preheat unhealthy and get it restarted.
	r.Handle("/healthz", httpx.NewHealth("preheat").Add("store", s.store.Ping)).Methods(http.MethodGet)
	return s.limitBody(r)
}

func (s *Service) limitBody(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body != nil {
			r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		}
		h.ServeHTTP(w, r)
	})
}

// requireToken guards operations that must never be open: with no tokens
// configured they are refused, saying what to configure.
func (s *Service) requireToken(tokens config.Tokens, h http.HandlerFunc) http.Handler {
	if len(tokens) == 0 {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			httpx.WriteError(w, http.StatusForbidden, "", "this operation needs an API token; configure apiTokens")
		})
	}
	return s.routeAuth(tokens, true, false, h)
}

// writeError answers err in the one error shape (errorWriter).
func (s *Service) writeError(w http.ResponseWriter, err error) { errorWriter{s.log}.writeError(w, err) }

// errorWriter answers errors; routes built apart from the Service embed
// one.
type errorWriter struct{ log *logrus.Entry }

// writeError answers err in the one error shape: an APIError carries its
// status and code, a refusal of the Harbor or push translation its status,
// ErrNotFound is 404, anything else is an internal error.
func (e errorWriter) writeError(w http.ResponseWriter, err error) {
	ae := e.apiError(err)
	httpx.WriteError(w, ae.Status, ae.Code, ae.Msg)
}

// apiError classifies err for an answer (and logs what is unexpected).
func (e errorWriter) apiError(err error) *APIError {
	var ae *APIError
	var refusal *harbor.Refusal
	var pushRefusal *webhook.Refusal
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &refusal):
		return &APIError{Status: refusal.Status, Msg: refusal.Msg}
	case errors.As(err, &pushRefusal):
		return &APIError{Status: pushRefusal.Status, Msg: pushRefusal.Msg}
	case errors.Is(err, ErrNotFound):
		return &APIError{Status: http.StatusNotFound, Code: httpx.CodeNotFound, Msg: err.Error()}
	}
	e.log.WithError(err).Error("preheat API error")
	return &APIError{Status: http.StatusInternalServerError, Code: httpx.CodeInternal, Msg: err.Error()}
}

// decode reads a JSON body strictly enough to catch garbage, mapping an
// oversized body to 413.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(mbe.Limit)
		}
		return badRequest("malformed JSON body: %v", err)
	}
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			return tooLarge(mbe.Limit)
		}
	}
	return nil
}

func tooLarge(limit int64) error {
	return &APIError{Status: http.StatusRequestEntityTooLarge, Code: httpx.CodeTooLarge, Msg: fmt.Sprintf("request body larger than %d bytes", limit)}
}

// maxHeartbeatBytes bounds a heartbeat body, read whole before its
// signature is checked.
const maxHeartbeatBytes = 64 << 10

// handleHeartbeat enrolls and refreshes nodes (nodes.Enroller decides).
func (s *Service) handleHeartbeat(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxHeartbeatBytes+1))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			s.writeError(w, tooLarge(mbe.Limit))
			return
		}
		httpx.WriteError(w, http.StatusBadRequest, "", "cannot read the heartbeat body")
		return
	}
	if len(body) > maxHeartbeatBytes {
		httpx.WriteError(w, http.StatusRequestEntityTooLarge, "", fmt.Sprintf("heartbeat larger than %d bytes", maxHeartbeatBytes))
		return
	}
	n, err := s.enroll.Accept(r.Context(), s.now(), r.Header, body)
	var refusal *nodes.Refusal
	switch {
	case errors.As(err, &refusal):
		if refusal.Err != nil {
			s.log.WithError(refusal.Err).WithField("remote", r.RemoteAddr).Debug("heartbeat refused")
		}
		if refusal.Code == nodes.CodeKeyMismatch {
			s.log.WithFields(logrus.Fields{"node": refusal.NodeID, "enrolledKey": nodeapi.Fingerprint(refusal.Pinned),
				"presentedKey": nodeapi.Fingerprint(refusal.Presented), "remote": r.RemoteAddr}).
				Warn("heartbeat for an enrolled node id from another key refused; if the node was re-imaged, forget it with DELETE /api/v1/nodes/{id}")
		}
		httpx.WriteError(w, refusal.Status, refusal.Code, refusal.Msg)
		return
	case err != nil:
		s.writeError(w, err)
		return
	}
	s.recordTraffic(r.Context(), n.Heartbeat)
	w.WriteHeader(http.StatusNoContent)
}

// handleForgetNode drops a node's enrollment so its id can enroll again
// with a new key (a re-imaged node). It always needs an API token: it is
// what lets a key other than the enrolled one take over a node id.
func (s *Service) handleForgetNode(w http.ResponseWriter, r *http.Request) {
	id := mux.Vars(r)["id"]
	if err := s.store.ForgetNode(r.Context(), id); err != nil {
		if errors.Is(err, ErrNotFound) {
			httpx.WriteError(w, http.StatusNotFound, "", fmt.Sprintf("node %q is not enrolled", id))
			return
		}
		s.writeError(w, err)
		return
	}
	s.log.WithFields(logrus.Fields{"node": id, "remote": r.RemoteAddr}).Info("node forgotten; its id enrolls with the next key that heartbeats")
	w.WriteHeader(http.StatusNoContent)
}

// NodeView is a node with its liveness, as listed by GET /api/v1/nodes.
type NodeView struct {
	Node
	Alive bool `json:"alive"`
}

func (s *Service) handleNodes(w http.ResponseWriter, r *http.Request) {
	nodes, err := s.store.ListNodes(r.Context())
	if err != nil {
		s.writeError(w, err)
		return
	}
	now := s.now()
	out := make([]NodeView, 0, len(nodes))
	for _, n := range nodes {
		out = append(out, NodeView{Node: n, Alive: n.Alive(now)})
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"nodes": out})
}

// GroupView summarises one group for GET /api/v1/groups.
type GroupView struct {
	Name           string   `json:"name"`
	Nodes          []string `json:"nodes"`
	Alive          int      `json:"alive"`
	Dead           int      `json:"dead"`
	CacheFreeBytes int64    `json:"cacheFreeBytes"`
}

func (s *Service) handleGroups(w http.ResponseWriter, r *http.Request) {
	known, nodes, err := s.admit.knownGroups(r.Context())
	if err != nil {
		s.writeError(w, err)
		return
	}
	now := s.now()
	byName := map[string]*GroupView{}
	for g := range known {
		byName[g] = &GroupView{Name: g, Nodes: []string{}}
	}
	for _, n := range nodes {
		for _, g := range n.Groups {
			v := byName[g]
			v.Nodes = append(v.Nodes, n.ID)
			if n.Alive(now) {
				v.Alive++
				v.CacheFreeBytes += n.CacheFreeBytes
			} else {
				v.Dead++
			}
		}
	}
	out := []GroupView{}
	for _, g := range sortedUnique(keys(byName)) {
		out = append(out, *byName[g])
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"groups": out})
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	return out
}

// handleCreate creates a job from a JobRequest body (the API's and the
// console's create): 201 with the job's view, or 200 with the running
// identical job's.
func (s *Service) handleCreate(source string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req JobRequest
		if err := decode(r, &req); err != nil {
			s.writeError(w, err)
			return
		}
		j, created, err := s.CreateJob(r.Context(), req, source)
		if err != nil {
			s.writeError(w, err)
			return
		}
		status := http.StatusCreated
		if !created {
			status = http.StatusOK
		}
		v, err := s.view(r.Context(), j)
		if err != nil {
			s.writeError(w, err)
			return
		}
		httpx.WriteJSON(w, status, v)
	}
}

func (s *Service) handleList(w http.ResponseWriter, r *http.Request) {
	limit := 100
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 {
			httpx.WriteError(w, http.StatusBadRequest, "", "limit must be a positive integer")
			return
		}
		limit = n
	}
	jobs, err := s.store.ListJobs(r.Context(), limit)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"jobs": jobs})
}

func jobID(r *http.Request) (int64, error) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil || id <= 0 {
		return 0, badRequest("job id must be a positive integer")
	}
	return id, nil
}

func (s *Service) handleGet(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err != nil {
		s.writeError(w, err)
		return
	}
	j, err := s.store.GetJob(r.Context(), id)
	if err != nil {
		s.writeError(w, err)
		return
	}
	v, err := s.view(r.Context(), j)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}

func (s *Service) handleCancel(w http.ResponseWriter, r *http.Request) {
	id, err := jobID(r)
	if err != nil {
		s.writeError(w, err)
		return
	}
	j, err := s.CancelJob(r.Context(), id)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, j)
}

// JobView is GET /api/v1/jobs/{id}: the job, per node per blob progress,
// and a per group roll-up (what `shoal preheat status` draws).
type JobView struct {
	*Job
	Progress      []Progress      `json:"progress"`
	GroupProgress []GroupProgress `json:"groupProgress"`
}

type GroupProgress struct {
	Group      string `json:"group"`
	Nodes      int    `json:"nodes"`
	Total      int    `json:"total"` // node x blob pairs
	Succeeded  int    `json:"succeeded"`
	Failed     int    `json:"failed"`
	Bytes      int64  `json:"bytes"`
	TotalBytes int64  `json:"totalBytes"`
}

func (s *Service) view(ctx context.Context, j *Job) (*JobView, error) {
	ps, err := s.store.ListProgress(ctx, j.ID)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	if ps == nil {
		ps = []Progress{}
	}
	byKey := map[string]Progress{}
	for _, p := range ps {
		byKey[progressField(p.NodeID, p.Digest)] = p
	}
	gp := map[string]*GroupProgress{}
	for _, t := range j.Targets {
		for _, g := range t.Groups {
			v := gp[g]
			if v == nil {
				v = &GroupProgress{Group: g}
				gp[g] = v
			}
			v.Nodes++
			for _, b := range j.Blobs {
				v.Total++
				v.TotalBytes += b.Size
				switch byKey[progressField(t.NodeID, b.Digest)].State {
				case StateSuccess:
					v.Succeeded++
					v.Bytes += b.Size
				case StateFailure:
					v.Failed++
				}
			}
		}
	}
	out := &JobView{Job: j, Progress: ps, GroupProgress: []GroupProgress{}}
	for _, g := range sortedUnique(keys(gp)) {
		out.GroupProgress = append(out.GroupProgress, *gp[g])
	}
	return out, nil
}
