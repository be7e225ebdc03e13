package preheat

// The Harbor P2P preheat provider's routes (Dragonfly driver, new and
// legacy API; the Kraken driver's notification is a push route):
// preheat/harbor translates, these handlers decode, start and answer.

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/preheat/harbor"
)

// createFunc starts a job (Service.CreateJob).
type createFunc func(ctx context.Context, req JobRequest, source string) (*Job, bool, error)

// harborRoutes answer Harbor's Dragonfly driver: what they read and how
// they start a job, nothing else of the Service.
type harborRoutes struct {
	errorWriter
	cfg      harbor.Config
	jobs     JobStore
	progress ProgressStore
	create   createFunc
}

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

func (h harborRoutes) dragonflyError(w http.ResponseWriter, err error) {
	ae := h.apiError(err)
	writeDragonflyErr(w, ae.Status, ae.Code, ae.Msg)
}

// harborJob is the job request a Harbor request translates to.
func harborJob(hr harbor.Request) JobRequest {
	return JobRequest{URL: hr.URL, Headers: hr.Headers, Groups: hr.Groups, onePerGroup: hr.OnePerGroup, clusterIDs: hr.ClusterIDs}
}

// blobURL is the registry URL of a blob of j's repository.
func blobURL(j *Job) func(digest string) string {
	return ImageRef{Registry: j.Registry, Repository: j.Repository}.BlobURL
}

func (h harborRoutes) handleDragonflyCreate(w http.ResponseWriter, r *http.Request) {
	var req harbor.CreateRequest
	if err := decode(r, &req); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			ae.Status = http.StatusUnprocessableEntity // as Dragonfly's manager answers binding errors
		}
		h.dragonflyError(w, err)
		return
	}
	hr, err := h.cfg.Translate(req)
	if err != nil {
		h.dragonflyError(w, err)
		return
	}
	j, _, err := h.create(r.Context(), harborJob(hr), "dragonfly")
	if err != nil {
		h.dragonflyError(w, err)
		return
	}
	ps, _ := h.progress.ListProgress(r.Context(), j.ID)
	httpx.WriteJSON(w, http.StatusOK, h.cfg.Created(j, ps, blobURL(j)))
}

func (h harborRoutes) handleDragonflyGet(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		writeDragonflyErr(w, http.StatusBadRequest, "", "job id must be an integer")
		return
	}
	j, err := h.jobs.GetJob(r.Context(), id)
	if err != nil {
		h.dragonflyError(w, err)
		return
	}
	ps, _ := h.progress.ListProgress(r.Context(), j.ID)
	httpx.WriteJSON(w, http.StatusOK, h.cfg.View(j, ps, blobURL(j)))
}

func (h harborRoutes) handleLegacyCreate(w http.ResponseWriter, r *http.Request) {
	var req harbor.LegacyImage
	if err := decode(r, &req); err != nil {
		h.writeError(w, err)
		return
	}
	hr, err := h.cfg.Legacy(req)
	if err != nil {
		h.writeError(w, err)
		return
	}
	j, _, err := h.create(r.Context(), harborJob(hr), "dragonfly-legacy")
	if err != nil {
		h.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"ID": strconv.FormatInt(j.ID, 10)})
}

func (h harborRoutes) handleLegacyGet(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "", "task id must be an integer")
		return
	}
	j, err := h.jobs.GetJob(r.Context(), id)
	if err != nil {
		h.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, harbor.LegacyStatus(j))
}
