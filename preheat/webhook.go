package preheat

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/httpx"
)

// seenTTL is how long a webhook delivery id is remembered: long enough to
// absorb the sender's retries of an already-finished preheat.
const seenTTL = time.Hour

// Envelope is a distribution notification envelope. Go's JSON decoding is
// case-insensitive, so the same struct also reads Harbor's capitalised
// Kraken-driver body ({"Events":[{"Id",…,"Target":{"Url",…}}]}).
type Envelope struct {
	Events []Event `json:"events"`
}

type Event struct {
	ID     string `json:"id"`
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Digest     string `json:"digest"`
		Repository string `json:"repository"`
		URL        string `json:"url"`
		Tag        string `json:"tag"`
	} `json:"target"`
}

const (
	eventsV1 = "application/vnd.docker.distribution.events.v1+json"
	eventsV2 = "application/vnd.docker.distribution.events.v2+json"
)

func isManifestType(mt string) bool {
	switch mt {
	case mtOCIManifest, mtOCIIndex, mtDockerV2, mtDockerList:
		return true
	}
	return false
}

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
		if mt != eventsV1 && mt != eventsV2 && mt != "application/json" {
			httpx.WriteError(w, http.StatusUnsupportedMediaType, "", "content type "+mt+" is not a distribution events envelope ("+eventsV1+" or "+eventsV2+")")
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
	var todo []pendingJob
	for _, ev := range env.Events {
		if ev.Action != "push" || !isManifestType(ev.Target.MediaType) || ev.Target.Repository == "" {
			res.Ignored++ // blob pushes, pulls, deletes
			continue
		}
		// Pushes by digest only are skipped: pushing a multi-platform index
		// emits one for every child manifest before the tagged index push,
		// which already covers them; preheating each would be N extra jobs.
		if ev.Target.Tag == "" {
			res.Ignored++
			continue
		}
		pol := s.matchPolicy(ev.Target.Repository, ev.Target.Tag)
		if pol == nil {
			res.Ignored++
			continue
		}
		img := ev.Target.URL
		if img == "" {
			img = s.cfg.Registry + "/v2/" + ev.Target.Repository + "/manifests/" + ev.Target.Digest
		}
		seen := "dist:" + ev.ID
		if ev.ID == "" {
			seen = "dist:" + hashKey(ev.Target.Repository, ev.Target.Digest, ev.Target.Tag)
		}
		todo = append(todo, pendingJob{seen, JobRequest{Image: img, Groups: pol.Groups, Platforms: pol.Platforms}})
	}
	if err := s.startAll(r.Context(), &res, todo, "distribution"); err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}

// pendingJob is a job a webhook request asks for, before it starts.
type pendingJob struct {
	seen string
	req  JobRequest
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
func (s *Service) startAll(ctx context.Context, res *WebhookResult, todo []pendingJob, source string) error {
	if len(todo) > s.cfg.MaxWebhookJobs {
		return &APIError{Status: http.StatusUnprocessableEntity,
			Msg: fmt.Sprintf("request would start %d preheat jobs; at most %d are started per request (maxWebhookJobs); none was started", len(todo), s.cfg.MaxWebhookJobs)}
	}
	for _, p := range todo {
		s.trigger(ctx, res, p.seen, p.req, source)
	}
	return nil
}

func hashKey(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:16])
}

func (s *Service) matchPolicy(repo, tag string) *Policy {
	for i := range s.policies {
		if s.policies[i].match(repo, tag) {
			return &s.policies[i].Policy
		}
	}
	return nil
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

// HarborPayload is Harbor's webhook body (default format); for the
// CloudEvents format the same event_data arrives under "data".
type HarborPayload struct {
	Type        string           `json:"type"`
	OccurAt     int64            `json:"occur_at"`
	Operator    string           `json:"operator"`
	EventData   *HarborEventData `json:"event_data"`
	SpecVersion string           `json:"specversion"`
	ID          string           `json:"id"`
	Data        *HarborEventData `json:"data"`
}

type HarborEventData struct {
	Resources []struct {
		Digest      string `json:"digest"`
		Tag         string `json:"tag"`
		ResourceURL string `json:"resource_url"`
	} `json:"resources"`
	Repository struct {
		Name         string `json:"name"`
		Namespace    string `json:"namespace"`
		RepoFullName string `json:"repo_full_name"`
	} `json:"repository"`
}

func (s *Service) handleHarborWebhook(w http.ResponseWriter, r *http.Request) {
	var p HarborPayload
	if err := decode(r, &p); err != nil {
		s.writeError(w, err)
		return
	}
	data, push := p.EventData, p.Type == "PUSH_ARTIFACT"
	if p.SpecVersion != "" {
		data, push = p.Data, p.Type == "harbor.artifact.pushed"
	}
	res := WebhookResult{Jobs: []int64{}}
	if !push || data == nil {
		res.Ignored++
		httpx.WriteJSON(w, http.StatusOK, res)
		return
	}
	if err := s.checkFanOut(len(data.Resources), "resources"); err != nil {
		s.writeError(w, err)
		return
	}
	repo := data.Repository.RepoFullName
	var todo []pendingJob
	for _, rs := range data.Resources {
		tag := rs.Tag
		if strings.HasPrefix(tag, "sha256:") {
			tag = "" // pushed by digest: Harbor puts the digest in tag
		}
		pol := s.matchPolicy(repo, tag)
		if pol == nil || rs.ResourceURL == "" {
			res.Ignored++
			continue
		}
		// resource_url is host[:port]/<repo>:<tag>; pin the pushed digest so
		// a tag moved again meanwhile does not preheat the wrong image.
		host, _, _ := strings.Cut(rs.ResourceURL, "/")
		img := host + "/" + repo
		if rs.Digest != "" {
			img += "@" + rs.Digest
		} else {
			img += ":" + tag
		}
		seen := "harbor:" + p.ID
		if p.ID == "" {
			seen = "harbor:" + hashKey(p.Type, fmt.Sprint(p.OccurAt), repo, rs.Digest, rs.Tag)
		}
		todo = append(todo, pendingJob{seen, JobRequest{Image: img, Groups: pol.Groups, Platforms: pol.Platforms}})
	}
	if err := s.startAll(r.Context(), &res, todo, "harbor"); err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}
