package webhook

import (
	"context"
	"fmt"
	"mime"
	"net/http"
	"time"
)

// Refusal is a notification that starts nothing, with the HTTP status it
// is answered with.
type Refusal struct {
	Status int
	Msg    string
}

func (e *Refusal) Error() string { return e.Msg }

// Translator turns whole notification requests into the preheats they ask
// for, refusing those that would fan out beyond its limits before any job
// starts.
type Translator struct {
	// Registry is the base URL of the registry distribution notifications
	// come from, for events without a target URL.
	Registry string
	// Policies decide what a distribution or Harbor push preheats.
	Policies Policies
	// MaxEvents bounds the events (Harbor: resources) of one request,
	// MaxJobs the jobs one request may start.
	MaxEvents, MaxJobs int
}

// Batch is what one request asks for: the preheats to start and how many
// events start none.
type Batch struct {
	Triggers []Trigger
	Ignored  int
}

// CheckContentType refuses (415) a distribution notification whose
// content type is set and is not an events envelope; the body is not
// read.
func CheckContentType(ct string) error {
	if ct == "" {
		return nil
	}
	mt, _, _ := mime.ParseMediaType(ct)
	if mt != EventsV1 && mt != EventsV2 && mt != "application/json" {
		return &Refusal{Status: http.StatusUnsupportedMediaType,
			Msg: "content type " + mt + " is not a distribution events envelope (" + EventsV1 + " or " + EventsV2 + ")"}
	}
	return nil
}

// Distribution is a registry's notification request (Distribution).
func (t Translator) Distribution(env Envelope) (Batch, error) {
	if err := t.checkEvents(len(env.Events), "events"); err != nil {
		return Batch{}, err
	}
	todo, ignored := Distribution(env, t.Registry, t.Policies.Match)
	return t.batch(todo, ignored)
}

// Harbor is a Harbor webhook request (HarborData, Harbor): anything but an
// artifact push is one ignored event.
func (t Translator) Harbor(p HarborPayload) (Batch, error) {
	data := HarborData(p)
	if data == nil {
		return Batch{Ignored: 1}, nil
	}
	if err := t.checkEvents(len(data.Resources), "resources"); err != nil {
		return Batch{}, err
	}
	todo, ignored := Harbor(p, data, t.Policies.Match)
	return t.batch(todo, ignored)
}

// Kraken is Harbor's Kraken-driver notification request (Kraken): every
// manifest push goes to groups; no events at all is a bad request.
func (t Translator) Kraken(env Envelope, groups []string) (Batch, error) {
	if len(env.Events) == 0 {
		return Batch{}, &Refusal{Status: http.StatusBadRequest, Msg: "notification has no events"}
	}
	if err := t.checkEvents(len(env.Events), "events"); err != nil {
		return Batch{}, err
	}
	todo, ignored := Kraken(env, groups)
	return t.batch(todo, ignored)
}

// checkEvents refuses a request carrying more than MaxEvents events,
// before any of them is looked at.
func (t Translator) checkEvents(n int, what string) error {
	if n > t.MaxEvents {
		return &Refusal{Status: http.StatusRequestEntityTooLarge,
			Msg: fmt.Sprintf("request carries %d %s; at most %d are accepted per request (maxWebhookEvents)", n, what, t.MaxEvents)}
	}
	return nil
}

// batch refuses the whole request when it would start more than MaxJobs
// jobs: one request must not fan out into an unbounded number of
// resolutions and dispatches.
func (t Translator) batch(todo []Trigger, ignored int) (Batch, error) {
	if len(todo) > t.MaxJobs {
		return Batch{}, &Refusal{Status: http.StatusUnprocessableEntity,
			Msg: fmt.Sprintf("request would start %d preheat jobs; at most %d are started per request (maxWebhookJobs); none was started", len(todo), t.MaxJobs)}
	}
	return Batch{Triggers: todo, Ignored: ignored}, nil
}

// SeenTTL is how long a delivery id is remembered: long enough to absorb
// the sender's retries of an already-finished preheat.
const SeenTTL = time.Hour

// Result is the answer to every push-trigger endpoint.
type Result struct {
	Jobs    []int64  `json:"jobs"`
	Ignored int      `json:"ignored"`
	Errors  []string `json:"errors,omitempty"`

	// FirstErr is the first job that failed to start, for the Kraken
	// endpoint, which answers non-2xx with its status when anything failed.
	FirstErr error `json:"-"`
}

// Start is a job starter: the id of the job started for a trigger.
type Start func(ctx context.Context, t Trigger) (int64, error)

// StartAll starts a job for every trigger of b whose delivery was not seen
// within SeenTTL of now. Failures are reported in the result, never
// returned: a registry retries a non-2xx answer forever and would block
// its notification queue on an image that cannot be preheated.
func StartAll(ctx context.Context, seen DeliveryStore, now time.Time, b Batch, start Start) Result {
	res := Result{Jobs: []int64{}, Ignored: b.Ignored}
	for _, t := range b.Triggers {
		first, err := seen.MarkSeen(ctx, now, t.Delivery, SeenTTL)
		if err != nil {
			res.Errors = append(res.Errors, err.Error())
			continue
		}
		if !first {
			res.Ignored++
			continue
		}
		id, err := start(ctx, t)
		if err != nil {
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %v", t.What(), err))
			if res.FirstErr == nil {
				res.FirstErr = err
			}
			continue
		}
		res.Jobs = append(res.Jobs, id)
	}
	return res
}

// What names what the trigger preheats: its image, or its manifest URL.
func (t Trigger) What() string {
	if t.Image != "" {
		return t.Image
	}
	return t.URL
}
