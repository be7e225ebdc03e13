package preheat

// The push-trigger routes (registry notifications, Harbor webhooks and
// Harbor's Kraken driver): preheat/webhook translates and starts, these
// handlers decode and answer.

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/preheat/harbor"
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

// pushRoutes answer push notifications: what they translate with, where
// deliveries are remembered and how a job starts, nothing else of the
// Service.
type pushRoutes struct {
	errorWriter
	translate webhook.Translator
	// krakenGroups are where the Kraken driver's pushes go
	// (harbor.Config.KrakenGroups).
	krakenGroups []string
	seen         webhook.DeliveryStore
	now          func() time.Time
	create       createFunc
}

func (p pushRoutes) handleDistribution(w http.ResponseWriter, r *http.Request) {
	if err := webhook.CheckContentType(r.Header.Get("Content-Type")); err != nil {
		p.writeError(w, err)
		return
	}
	var env Envelope
	if err := decode(r, &env); err != nil {
		p.writeError(w, err)
		return
	}
	b, err := p.translate.Distribution(env)
	if err != nil {
		p.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, p.startAll(r.Context(), b, "distribution"))
}

func (p pushRoutes) handleHarbor(w http.ResponseWriter, r *http.Request) {
	var body HarborPayload
	if err := decode(r, &body); err != nil {
		p.writeError(w, err)
		return
	}
	b, err := p.translate.Harbor(body)
	if err != nil {
		p.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, p.startAll(r.Context(), b, "harbor"))
}

// handleKraken accepts Harbor's Kraken-driver notification (capitalised
// keys; decoded by the same struct as distribution envelopes) and answers
// as harbor.KrakenAnswer says: non-2xx when any job did not start.
func (p pushRoutes) handleKraken(w http.ResponseWriter, r *http.Request) {
	var env Envelope
	if err := decode(r, &env); err != nil {
		p.writeError(w, err)
		return
	}
	b, err := p.translate.Kraken(env, p.krakenGroups)
	if err != nil {
		p.writeError(w, err)
		return
	}
	res := p.startAll(r.Context(), b, "kraken")
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

// startAll starts the jobs of one request (webhook.StartAll).
func (p pushRoutes) startAll(ctx context.Context, b webhook.Batch, source string) webhook.Result {
	return webhook.StartAll(ctx, p.seen, p.now(), b, func(ctx context.Context, t webhook.Trigger) (int64, error) {
		j, _, err := p.create(ctx, JobRequest{Image: t.Image, URL: t.URL, Groups: t.Groups, Platforms: t.Platforms}, source)
		if err != nil {
			p.log.WithFields(logrus.Fields{"image": t.What(), "trigger": source}).WithError(err).Warn("push-triggered preheat not started")
			return 0, err
		}
		return j.ID, nil
	})
}
