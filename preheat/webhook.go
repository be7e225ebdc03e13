package preheat

// The push-trigger routes: preheat/webhook translates and starts, these
// handlers decode and answer.

import (
	"net/http"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// The notification shapes and the answer are webhook's.
type (
	Envelope        = webhook.Envelope
	Event           = webhook.Event
	HarborPayload   = webhook.HarborPayload
	HarborEventData = webhook.HarborEventData
	WebhookResult   = webhook.Result
)

func (s *Service) handleDistribution(w http.ResponseWriter, r *http.Request) {
	if err := webhook.CheckContentType(r.Header.Get("Content-Type")); err != nil {
		s.writeError(w, err)
		return
	}
	var env Envelope
	if err := decode(r, &env); err != nil {
		s.writeError(w, err)
		return
	}
	b, err := s.up.push.Distribution(env)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s.startAll(r, b, "distribution"))
}

func (s *Service) handleHarborWebhook(w http.ResponseWriter, r *http.Request) {
	var p HarborPayload
	if err := decode(r, &p); err != nil {
		s.writeError(w, err)
		return
	}
	b, err := s.up.push.Harbor(p)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s.startAll(r, b, "harbor"))
}
