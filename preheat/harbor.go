package preheat

// The Harbor P2P preheat provider's routes: preheat/harbor translates,
// these handlers decode, start and answer.

import (
	"context"
	"errors"
	"net/http"
	"strconv"

	"github.com/gorilla/mux"
	"github.com/sirupsen/logrus"

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

// harborJob is the job request a Harbor request translates to.
func harborJob(hr harbor.Request) JobRequest {
	return JobRequest{URL: hr.URL, Headers: hr.Headers, Groups: hr.Groups, onePerGroup: hr.OnePerGroup, clusterIDs: hr.ClusterIDs}
}

// blobURL is the registry URL of a blob of j's repository.
func blobURL(j *Job) func(digest string) string {
	return ImageRef{Registry: j.Registry, Repository: j.Repository}.BlobURL
}

func (s *Service) handleDragonflyCreate(w http.ResponseWriter, r *http.Request) {
	var req harbor.CreateRequest
	if err := decode(r, &req); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			ae.Status = http.StatusUnprocessableEntity // as Dragonfly's manager answers binding errors
		}
		s.dragonflyError(w, err)
		return
	}
	hr, err := s.cfg.Harbor.Translate(req)
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	j, _, err := s.CreateJob(r.Context(), harborJob(hr), "dragonfly")
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	ps, _ := s.store.ListProgress(r.Context(), j.ID)
	httpx.WriteJSON(w, http.StatusOK, s.cfg.Harbor.Created(j, ps, blobURL(j)))
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
	ps, _ := s.store.ListProgress(r.Context(), j.ID)
	httpx.WriteJSON(w, http.StatusOK, s.cfg.Harbor.View(j, ps, blobURL(j)))
}

func (s *Service) handleLegacyCreate(w http.ResponseWriter, r *http.Request) {
	var req harbor.LegacyImage
	if err := decode(r, &req); err != nil {
		s.writeError(w, err)
		return
	}
	hr, err := s.cfg.Harbor.Legacy(req)
	if err != nil {
		s.writeError(w, err)
		return
	}
	j, _, err := s.CreateJob(r.Context(), harborJob(hr), "dragonfly-legacy")
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
// keys; decoded by the same struct as distribution envelopes) and answers
// as harbor.KrakenAnswer says: non-2xx when any job did not start.
func (s *Service) handleKraken(w http.ResponseWriter, r *http.Request) {
	var env Envelope
	if err := decode(r, &env); err != nil {
		s.writeError(w, err)
		return
	}
	b, err := s.up.push.Kraken(env, s.cfg.Harbor.KrakenGroups())
	if err != nil {
		s.writeError(w, err)
		return
	}
	res := s.startAll(r, b, "kraken")
	status := http.StatusBadGateway
	var ae *APIError
	if errors.As(res.FirstErr, &ae) {
		status = ae.Status
	}
	status, body := harbor.KrakenAnswer(res, status)
	if status != http.StatusOK {
		w.Header().Set("Cache-Control", "no-store")
	}
	httpx.WriteJSON(w, status, body)
}

// startAll starts the jobs of one push-trigger request (webhook.StartAll).
func (s *Service) startAll(r *http.Request, b webhook.Batch, source string) webhook.Result {
	return webhook.StartAll(r.Context(), s.store, s.now(), b, func(ctx context.Context, t webhook.Trigger) (int64, error) {
		j, _, err := s.CreateJob(ctx, JobRequest{Image: t.Image, URL: t.URL, Groups: t.Groups, Platforms: t.Platforms}, source)
		if err != nil {
			s.log.WithFields(logrus.Fields{"image": t.What(), "trigger": source}).WithError(err).Warn("push-triggered preheat not started")
			return 0, err
		}
		return j.ID, nil
	})
}
