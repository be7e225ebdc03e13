package preheat

// The Harbor P2P preheat provider's routes: preheat/harbor translates,
// these handlers answer.

import (
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/gorilla/mux"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/preheat/harbor"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// dragonflyErrBody is Dragonfly's manager's error shape ({"errors": "..."}
// on binding errors) carrying Shoal's one shape ("error", "code") too.
type dragonflyErrBody struct {
	Errors string `json:"errors"`
	httpx.ErrorBody
}

func writeDragonflyErr(w http.ResponseWriter, status int, code, msg string) {
	if code == "" {
		code = httpx.CodeFor(status)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, status, dragonflyErrBody{Errors: msg, ErrorBody: httpx.ErrorBody{Error: msg, Code: code}})
}

func (s *Service) dragonflyError(w http.ResponseWriter, err error) {
	ae := s.apiError(err)
	writeDragonflyErr(w, ae.Status, ae.Code, ae.Msg)
}

func (s *Service) handleDragonflyCreate(w http.ResponseWriter, r *http.Request) {
	var req harbor.CreateRequest
	if err := decode(r, &req); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			ae.Status = http.StatusUnprocessableEntity
		}
		s.dragonflyError(w, err)
		return
	}
	hr, err := s.cfg.Harbor.Translate(req)
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	j, _, err := s.CreateJob(r.Context(), JobRequest{URL: hr.URL, Headers: hr.Headers, Groups: hr.Groups, onePerGroup: hr.OnePerGroup, clusterIDs: hr.ClusterIDs}, "dragonfly")
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	v := s.dragonflyView(r, j)
	v.State = "PENDING" // what Dragonfly answers on create; Harbor then polls
	httpx.WriteJSON(w, http.StatusOK, v)
}

func (s *Service) dragonflyView(r *http.Request, j *Job) *harbor.Job {
	ps, _ := s.store.ListProgress(r.Context(), j.ID)
	ref := ImageRef{Registry: j.Registry, Repository: j.Repository}
	return s.cfg.Harbor.View(j, ps, ref.BlobURL)
}

func (s *Service) handleDragonflyGet(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		writeDragonflyErr(w, http.StatusBadRequest, "", "job id must be an integer")
		return
	}
	j, err := s.store.GetJob(r.Context(), id)
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s.dragonflyView(r, j))
}

func (s *Service) handleLegacyCreate(w http.ResponseWriter, r *http.Request) {
	var req harbor.LegacyImage
	if err := decode(r, &req); err != nil {
		s.writeError(w, err)
		return
	}
	if req.Type != "image" || req.URL == "" {
		httpx.WriteError(w, http.StatusBadRequest, "", "want type image and a manifest url")
		return
	}
	groups, _, _ := s.cfg.Harbor.Groups(nil, "")
	j, _, err := s.CreateJob(r.Context(), JobRequest{URL: req.URL, Headers: req.StringHeaders(), Groups: groups}, "dragonfly-legacy")
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"ID": strconv.FormatInt(j.ID, 10)})
}

func (s *Service) handleLegacyGet(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "", "task id must be an integer")
		return
	}
	j, err := s.store.GetJob(r.Context(), id)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, harbor.LegacyStatus(j))
}

// handleKraken accepts Harbor's Kraken-driver notification (capitalised
// keys; decoded by the same struct as distribution envelopes). Harbor
// reports SUCCESS as soon as we answer 2xx, so a failure to start any job
// is answered non-2xx (the failure's own status: 422 no target nodes, 404
// image not found, 502 registry unreachable) to surface it in Harbor.
func (s *Service) handleKraken(w http.ResponseWriter, r *http.Request) {
	var env Envelope
	if err := decode(r, &env); err != nil {
		s.writeError(w, err)
		return
	}
	if len(env.Events) == 0 {
		httpx.WriteError(w, http.StatusBadRequest, "", "notification has no events")
		return
	}
	if err := s.checkFanOut(len(env.Events), "events"); err != nil {
		s.writeError(w, err)
		return
	}
	groups, _, _ := s.cfg.Harbor.Groups(nil, "")
	res := WebhookResult{Jobs: []int64{}}
	todo, ignored := webhook.Kraken(env, groups)
	res.Ignored += ignored
	if err := s.startAll(r.Context(), &res, todo, "kraken"); err != nil {
		s.writeError(w, err)
		return
	}
	// Any event that could not be started makes the answer non-2xx: Harbor
	// never polls this provider, so a 2xx is reported as a finished preheat.
	if len(res.Errors) > 0 {
		status := res.status
		if status < 400 {
			status = http.StatusBadGateway
		}
		w.Header().Set("Cache-Control", "no-store")
		httpx.WriteJSON(w, status, map[string]any{"error": strings.Join(res.Errors, "; "), "code": httpx.CodeFor(status),
			"errors": res.Errors, "jobs": res.Jobs})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}
