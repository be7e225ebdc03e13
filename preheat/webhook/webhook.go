// Package webhook turns push notifications into the preheats they ask
// for, as pure translation: a distribution notification envelope, Harbor's
// webhook (default and CloudEvents formats) and Harbor's Kraken-driver
// notification each become a list of Triggers; starting them, and
// remembering deliveries, is the service's.
package webhook

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"strings"

	"github.com/shoalproject/shoal/preheat/internal/mediatype"
)

// Envelope is a distribution notification envelope. Go's JSON decoding is
// case-insensitive, so the same struct also reads Harbor's capitalised
// Kraken-driver body ({"Events":[{"Id",…,"Target":{"Url",…}}]}).
type Envelope struct {
	Events []Event `json:"events"`
}

// Event is one event of an Envelope.
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

// The content types a distribution notification arrives with.
const (
	EventsV1 = "application/vnd.docker.distribution.events.v1+json"
	EventsV2 = "application/vnd.docker.distribution.events.v2+json"
)

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

// HarborEventData is what was pushed.
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

// Trigger is one preheat a notification asks for.
type Trigger struct {
	// Delivery identifies the delivered event, so a redelivery is not
	// preheated twice.
	Delivery string
	// Image is what to preheat (a reference), or URL (a manifest URL).
	Image, URL string
	Groups     []string
	Platforms  []string
}

// Target is what a policy says about a pushed repository and tag.
type Target struct {
	Groups, Platforms []string
}

// Match finds the policy of a pushed repository and tag ("" when pushed
// by digest); false when none applies.
type Match func(repo, tag string) (Target, bool)

// Distribution translates a registry's notification: tagged manifest
// pushes matched by a policy. registry is the base URL of the registry the
// notifications come from, for events without a target URL.
func Distribution(env Envelope, registry string, match Match) (todo []Trigger, ignored int) {
	for _, ev := range env.Events {
		if ev.Action != "push" || !mediatype.Manifest(ev.Target.MediaType) || ev.Target.Repository == "" {
			ignored++ // blob pushes, pulls, deletes
			continue
		}
		// Pushes by digest only are skipped: pushing a multi-platform index
		// emits one for every child manifest before the tagged index push,
		// which already covers them; preheating each would be N extra jobs.
		if ev.Target.Tag == "" {
			ignored++
			continue
		}
		pol, ok := match(ev.Target.Repository, ev.Target.Tag)
		if !ok {
			ignored++
			continue
		}
		img := ev.Target.URL
		if img == "" {
			img = registry + "/v2/" + ev.Target.Repository + "/manifests/" + ev.Target.Digest
		}
		seen := "dist:" + ev.ID
		if ev.ID == "" {
			seen = "dist:" + hashKey(ev.Target.Repository, ev.Target.Digest, ev.Target.Tag)
		}
		todo = append(todo, Trigger{Delivery: seen, Image: img, Groups: pol.Groups, Platforms: pol.Platforms})
	}
	return todo, ignored
}

// HarborData is the payload's event data when it reports an artifact
// push, in either format; nil otherwise.
func HarborData(p HarborPayload) *HarborEventData {
	if p.SpecVersion != "" {
		if p.Type == "harbor.artifact.pushed" {
			return p.Data
		}
		return nil
	}
	if p.Type == "PUSH_ARTIFACT" {
		return p.EventData
	}
	return nil
}

// Harbor translates the resources of a Harbor push (data is HarborData's)
// matched by a policy.
func Harbor(p HarborPayload, data *HarborEventData, match Match) (todo []Trigger, ignored int) {
	repo := data.Repository.RepoFullName
	for _, rs := range data.Resources {
		tag := rs.Tag
		if strings.HasPrefix(tag, "sha256:") {
			tag = "" // pushed by digest: Harbor puts the digest in tag
		}
		pol, ok := match(repo, tag)
		if !ok || rs.ResourceURL == "" {
			ignored++
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
		todo = append(todo, Trigger{Delivery: seen, Image: img, Groups: pol.Groups, Platforms: pol.Platforms})
	}
	return todo, ignored
}

// Kraken translates Harbor's Kraken-driver notification: every manifest
// push with a URL, to groups.
func Kraken(env Envelope, groups []string) (todo []Trigger, ignored int) {
	for _, ev := range env.Events {
		if ev.Action != "push" || !mediatype.Manifest(ev.Target.MediaType) || ev.Target.URL == "" {
			ignored++
			continue
		}
		seen := "kraken:" + ev.ID
		if ev.ID == "" {
			seen = "kraken:" + hashKey(ev.Target.URL, ev.Target.Digest)
		}
		todo = append(todo, Trigger{Delivery: seen, URL: ev.Target.URL, Groups: groups})
	}
	return todo, ignored
}

// hashKey is a delivery id for senders that send none.
func hashKey(parts ...string) string {
	h := sha256.Sum256([]byte(strings.Join(parts, "\x00")))
	return hex.EncodeToString(h[:16])
}
