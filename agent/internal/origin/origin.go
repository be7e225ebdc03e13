// Package origin is the agent's way to the upstream registries: which
// registries it may talk to at all (Allowed), the requests it makes to
// them on its requesters' behalf (Client: the access check, the torrent,
// plain blob bodies, Range requests for the swarm engine) and one download
// per blob however many requesters want it (Flights), with the
// credentials of each requester used only while that requester waits.
package origin

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// UpstreamError is a non-success answer from the upstream registry that the
// client should see as-is (401 with WWW-Authenticate, 403, 404...).
type UpstreamError struct {
	Status int
	Header http.Header
	Body   []byte
}

func (e *UpstreamError) Error() string {
	return fmt.Sprintf("upstream answered %d", e.Status)
}

// RequestError is a request the agent refuses before contacting anyone.
type RequestError struct {
	Status int
	Code   string // OCI error code, for the mirror
	Msg    string
}

func (e *RequestError) Error() string { return e.Msg }

// IsRefusal reports whether err is the upstream refusing credentials.
func IsRefusal(err error) bool {
	var ue *UpstreamError
	return errors.As(err, &ue) && (ue.Status == http.StatusUnauthorized || ue.Status == http.StatusForbidden)
}

// BlobURL is the blob route of a registry.
func BlobURL(base, repo, hexd string) string {
	return base + "/v2/" + repo + "/blobs/sha256:" + hexd
}

// NormURL is a registry URL in a form two spellings of one registry share:
// scheme and host in lower case, no trailing slash. Anything but a plain
// http(s)://host[:port][/path] is not a registry URL.
func NormURL(raw string) (string, bool) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil ||
		u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return "", false
	}
	return strings.ToLower(u.Scheme) + "://" + strings.ToLower(u.Host) + strings.TrimRight(u.EscapedPath(), "/"), true
}

// Allowed finds base among the configured upstream URLs (index into
// urls): the agent connects to nothing else, whatever a request names.
func Allowed(urls []string, base string) (int, error) {
	if want, ok := NormURL(base); ok {
		for i, u := range urls {
			if have, ok := NormURL(u); ok && have == want {
				return i, nil
			}
		}
	}
	return -1, &RequestError{Status: http.StatusForbidden, Code: "DENIED",
		Msg: fmt.Sprintf("registry %q is not a configured upstream of this agent", base)}
}
