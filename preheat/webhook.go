package preheat

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// seenTTL is how long a webhook delivery id is remembered: long enough to
// absorb the sender's retries of an already-finished preheat.
const seenTTL = time.Hour

// The notification shapes are webhook's.
type (
	Envelope        = webhook.Envelope
	Event           = webhook.Event
	HarborPayload   = webhook.HarborPayload
	HarborEventData = webhook.HarborEventData
)

// WebhookResult is the answer to every push-trigger endpoint.
type WebhookResult struct {
	Jobs    []int64  `json:"jobs"`
	Ignored int      `json:"ignored"`
	Errors  []string `json:"errors,omitempty"`

	// status is the HTTP status of the first error, for the Kraken
	// endpoint, which must answer non-2xx when anything failed.
	status int
}

func (s *Service) handleDistribution(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" {
		mt, _, _ := mime.ParseMediaType(ct)
		if mt != webhook.EventsV1 && mt != webhook.EventsV2 && mt != "application/json" {
			httpx.WriteError(w, http.StatusUnsupportedMediaType, "", "content type "+mt+" is not a distribution events envelope ("+webhook.EventsV1+" or "+webhook.EventsV2+")")
			return
		}
	}
	var env Envelope
	if err := decode(r, &env); err != nil {
		s.writeError(w, err)
		return
	}
	if err := s.checkFanOut(len(env.Events), "events"); err != nil {
		s.writeError(w, err)
		return
	}
	res := WebhookResult{Jobs: []int64{}}
	todo, ignored := webhook.Distribution(env, s.cfg.Registry, s.matchPolicy)
	res.Ignored += ignored
	if err := s.startAll(r.Context(), &res, todo, "distribution"); err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

// checkFanOut refuses a webhook request carrying more events than
// MaxWebhookEvents, before any of them is looked at.
func (s *Service) checkFanOut(n int, what string) error {
	if n > s.cfg.MaxWebhookEvents {
		return &APIError{Status: http.StatusRequestEntityTooLarge,
			Msg: fmt.Sprintf("request carries %d %s; at most %d are accepted per request (maxWebhookEvents)", n, what, s.cfg.MaxWebhookEvents)}
	}
	return nil
}

// startAll starts the jobs of one webhook request, or none of them when
// they are more than MaxWebhookJobs: one request must not fan out into an
// unbounded number of resolutions and dispatches.
func (s *Service) startAll(ctx context.Context, res *WebhookResult, todo []webhook.Trigger, source string) error {
	if len(todo) > s.cfg.MaxWebhookJobs {
		return &APIError{Status: http.StatusUnprocessableEntity,
			Msg: fmt.Sprintf("request would start %d preheat jobs; at most %d are started per request (maxWebhookJobs); none was started", len(todo), s.cfg.MaxWebhookJobs)}
	}
	for _, t := range todo {
		s.trigger(ctx, res, t.Delivery, JobRequest{Image: t.Image, URL: t.URL, Groups: t.Groups, Platforms: t.Platforms}, source)
	}
	return nil
}

// matchPolicy is the first policy that applies to a pushed repository and
// tag (webhook.Match).
func (s *Service) matchPolicy(repo, tag string) (webhook.Target, bool) {
	for i := range s.up.policies {
		if s.up.policies[i].match(repo, tag) {
			p := s.up.policies[i].Policy
			return webhook.Target{Groups: p.Groups, Platforms: p.Platforms}, true
		}
	}
	return webhook.Target{}, false
}

// trigger starts a job for one delivered event unless the delivery was
// seen before. Failures are reported in the body but answered 200: a
// registry retries non-2xx forever and would block its notification queue
// on an image that cannot be preheated.
func (s *Service) trigger(ctx context.Context, res *WebhookResult, seenKey string, req JobRequest, source string) {
	first, err := s.store.MarkSeen(ctx, s.now(), seenKey, seenTTL)
	if err != nil {
		res.Errors = append(res.Errors, err.Error())
		return
	}
	if !first {
		res.Ignored++
		return
	}
	j, _, err := s.CreateJob(ctx, req, source)
	if err != nil {
		s.log.WithFields(logrus.Fields{"image": cmp.Or(req.Image, req.URL), "trigger": source}).WithError(err).Warn("push-triggered preheat not started")
		res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", cmp.Or(req.Image, req.URL), err))
		if res.status == 0 {
			res.status = http.StatusBadGateway
			var ae *APIError
			if errors.As(err, &ae) {
				res.status = ae.Status
			}
		}
		return
	}
	res.Jobs = append(res.Jobs, j.ID)
}

func (s *Service) handleHarborWebhook(w http.ResponseWriter, r *http.Request) {
	var p HarborPayload
	if err := decode(r, &p); err != nil {
		s.writeError(w, err)
		return
	}
	data := webhook.HarborData(p)
	res := WebhookResult{Jobs: []int64{}}
	if data == nil {
		res.Ignored++
		httpx.WriteJSON(w, http.StatusOK, res)
		return
	}
	if err := s.checkFanOut(len(data.Resources), "resources"); err != nil {
		s.writeError(w, err)
		return
	}
	todo, ignored := webhook.Harbor(p, data, s.matchPolicy)
	res.Ignored += ignored
	if err := s.startAll(r.Context(), &res, todo, "harbor"); err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}
