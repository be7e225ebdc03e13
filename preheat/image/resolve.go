// Package image locates an image on a registry and resolves it to the
// blobs a preheat fetches: references, manifest URLs, the registry token
// dance, platform selection.
package image

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/preheat/internal/mediatype"
	"github.com/shoalproject/shoal/preheat/jobs"
)

// Ref is an image located on a registry.
type Ref struct {
	Registry   string // scheme://host[:port]
	Repository string
	Reference  string // tag or digest
}

func (r Ref) String() string {
	sep := ":"
	if strings.HasPrefix(r.Reference, "sha256:") {
		sep = "@"
	}
	return strings.TrimPrefix(strings.TrimPrefix(r.Registry, "http://"), "https://") + "/" + r.Repository + sep + r.Reference
}

func (r Ref) manifestURL(ref string) string {
	return r.Registry + "/v2/" + r.Repository + "/manifests/" + ref
}

// BlobURL is where agents (and Harbor's job report) find a blob.
func (r Ref) BlobURL(digest string) string {
	return r.Registry + "/v2/" + r.Repository + "/blobs/" + digest
}

// ParseManifestURL parses https://host/v2/<repo>/manifests/<ref>, the form
// Harbor and registry notifications use.
func ParseManifestURL(raw string) (Ref, error) {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return Ref{}, fmt.Errorf("manifest url %q: want http(s)://host/v2/<repo>/manifests/<ref>", raw)
	}
	p := strings.TrimPrefix(u.Path, "/v2/")
	i := strings.LastIndex(p, "/manifests/")
	if p == u.Path || i <= 0 {
		return Ref{}, fmt.Errorf("manifest url %q: want http(s)://host/v2/<repo>/manifests/<ref>", raw)
	}
	ref := p[i+len("/manifests/"):]
	if ref == "" || strings.Contains(ref, "/") {
		return Ref{}, fmt.Errorf("manifest url %q: bad reference", raw)
	}
	return Ref{Registry: u.Scheme + "://" + u.Host, Repository: p[:i], Reference: ref}, nil
}

// Parse parses "host:port/repo:tag", "repo@sha256:…" (default
// registry) or a manifest URL.
func Parse(s, defaultRegistry string, plainHTTP []string) (Ref, error) {
	if strings.HasPrefix(s, "http://") || strings.HasPrefix(s, "https://") {
		return ParseManifestURL(s)
	}
	if s == "" || strings.ContainsAny(s, " \t\n") {
		return Ref{}, fmt.Errorf("image %q: empty or contains spaces", s)
	}
	ref := Ref{Registry: strings.TrimSuffix(defaultRegistry, "/")}
	name := s
	if i := strings.Index(s, "/"); i > 0 && strings.ContainsAny(s[:i], ".:") || strings.HasPrefix(s, "localhost/") {
		host := s[:i]
		name = s[i+1:]
		scheme := "https://"
		if slices.Contains(plainHTTP, host) || strings.HasPrefix(host, "127.") || strings.HasPrefix(host, "localhost") ||
			strings.TrimPrefix(strings.TrimPrefix(defaultRegistry, "http://"), "https://") == host && strings.HasPrefix(defaultRegistry, "http://") {
			scheme = "http://"
		}
		ref.Registry = scheme + host
	}
	if i := strings.Index(name, "@"); i >= 0 {
		ref.Repository, ref.Reference = name[:i], name[i+1:]
	} else if i := strings.LastIndex(name, ":"); i >= 0 && !strings.Contains(name[i:], "/") {
		ref.Repository, ref.Reference = name[:i], name[i+1:]
	} else {
		ref.Repository, ref.Reference = name, "latest"
	}
	if ref.Repository == "" || ref.Reference == "" || ref.Registry == "" {
		return Ref{}, fmt.Errorf("image %q: cannot parse", s)
	}
	return ref, nil
}

// ResolveError classifies a resolution failure so the API can answer with
// a fitting status (404 unknown image, 401 bad credentials, 502 registry
// unreachable or broken).
type ResolveError struct {
	Status int
	Err    error
}

func (e *ResolveError) Error() string { return e.Err.Error() }
func (e *ResolveError) Unwrap() error { return e.Err }

// unreachable is a failed connection to what. The transport's error text
// can quote bytes the other end sent (a malformed response), so callers
// get a fixed message and the detail goes to the debug log.
func (r *Resolver) unreachable(what string, err error) error {
	r.log.WithError(err).Debugf("%s unreachable", what)
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return &ResolveError{Status: http.StatusGatewayTimeout, Err: fmt.Errorf("%s did not answer in time", what)}
	}
	return &ResolveError{Status: http.StatusBadGateway, Err: fmt.Errorf("%s unreachable", what)}
}

// Credentials for one job. Never persisted, never logged.
type Credentials struct {
	Username string            `json:"username,omitempty"`
	Password string            `json:"password,omitempty"`
	Headers  map[string]string `json:"headers,omitempty"`
}

func (c Credentials) empty() bool { return c.Username == "" && c.Password == "" && len(c.Headers) == 0 }

// Resolved is what a job needs: the manifest digest, the blobs, and the
// headers agents must send to the registry to fetch them.
type Resolved struct {
	Digest       string
	Blobs        []jobs.Blob
	AgentHeaders map[string]string
}

const (
	mtOCIIndex    = mediatype.OCIIndex
	mtOCIManifest = mediatype.OCIManifest
	mtDockerList  = mediatype.DockerList
	mtDockerV2    = mediatype.DockerV2
)

var manifestAccept = strings.Join([]string{mtOCIIndex, mtOCIManifest, mtDockerList, mtDockerV2}, ", ")

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
	} `json:"platform,omitempty"`
}

type manifestDoc struct {
	MediaType string       `json:"mediaType"`
	Config    *descriptor  `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"`
}

// Resolver fetches manifests with plain HTTP, doing the registry token
// dance when challenged. Plain HTTP rather than go-containerregistry's
// remote keeps the exact headers we hand to agents under our control.
type Resolver struct {
	client *http.Client
	log    *logrus.Entry
}

// NewResolver resolves through client, logging what it cannot show a
// caller (a transport's error text) to log at debug level.
func NewResolver(client *http.Client, log *logrus.Entry) *Resolver {
	return &Resolver{client: client, log: log}
}

// maxManifestBytes bounds what we read from a registry (the spec suggests
// registries accept at least 4 MiB manifests).
const maxManifestBytes = 4 << 20

func (r *Resolver) Resolve(ctx context.Context, ref Ref, platforms []string, cred Credentials) (*Resolved, error) {
	auth := authState{cred: cred}
	for k, v := range cred.Headers {
		if strings.EqualFold(k, "Authorization") {
			auth.header = v
		}
	}
	top, mt, digest, err := r.getManifest(ctx, ref, ref.Reference, &auth)
	if err != nil {
		return nil, err
	}
	res := &Resolved{Digest: digest}
	seen := map[string]bool{}
	add := func(d descriptor) {
		if !seen[d.Digest] {
			seen[d.Digest] = true
			res.Blobs = append(res.Blobs, jobs.Blob{Digest: d.Digest, Size: d.Size, MediaType: d.MediaType})
		}
	}
	addImage := func(m *manifestDoc) {
		if m.Config != nil {
			add(*m.Config)
		}
		for _, l := range m.Layers {
			add(l)
		}
	}
	if mt == mtOCIIndex || mt == mtDockerList || (mt == "" && len(top.Manifests) > 0) {
		matched := 0
		for _, d := range top.Manifests {
			if !platformMatch(d, platforms) {
				continue
			}
			matched++
			m, _, _, err := r.getManifest(ctx, ref, d.Digest, &auth)
			if err != nil {
				return nil, err
			}
			addImage(m)
		}
		if matched == 0 {
			return nil, &ResolveError{Status: http.StatusBadRequest, Err: fmt.Errorf("image %s: no manifest matches platforms %v", ref, platforms)}
		}
	} else {
		addImage(top)
	}
	if len(res.Blobs) == 0 {
		return nil, &ResolveError{Status: http.StatusBadGateway, Err: fmt.Errorf("image %s: manifest lists no blobs", ref)}
	}
	res.AgentHeaders = map[string]string{}
	for k, v := range cred.Headers {
		res.AgentHeaders[k] = v
	}
	if auth.header != "" {
		res.AgentHeaders["Authorization"] = auth.header
	}
	return res, nil
}

func platformMatch(d descriptor, platforms []string) bool {
	if d.Platform == nil {
		return len(platforms) == 0
	}
	p := d.Platform.OS + "/" + d.Platform.Architecture
	if len(platforms) == 0 {
		// Attestation manifests in buildx indexes carry unknown/unknown.
		return d.Platform.OS != "unknown"
	}
	for _, want := range platforms {
		if want == p || (d.Platform.Variant != "" && want == p+"/"+d.Platform.Variant) {
			return true
		}
	}
	return false
}

// authState carries the Authorization header a job ends up using, so the
// token earned during resolution is also what the agents send.
type authState struct {
	cred   Credentials
	header string
}

func (r *Resolver) getManifest(ctx context.Context, ref Ref, reference string, auth *authState) (*manifestDoc, string, string, error) {
	u := ref.manifestURL(reference)
	resp, err := r.do(ctx, u, auth)
	if err != nil {
		return nil, "", "", r.unreachable("registry "+ref.Registry, err)
	}
	if resp.StatusCode == http.StatusUnauthorized {
		chal := resp.Header.Get("WWW-Authenticate")
		resp.Body.Close()
		if err := r.authorize(ctx, chal, ref, auth); err != nil {
			return nil, "", "", err
		}
		if resp, err = r.do(ctx, u, auth); err != nil {
			return nil, "", "", r.unreachable("registry "+ref.Registry, err)
		}
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotFound:
		return nil, "", "", &ResolveError{Status: http.StatusNotFound, Err: fmt.Errorf("image %s not found on %s", ref.Repository+":"+reference, ref.Registry)}
	case resp.StatusCode == http.StatusUnauthorized || resp.StatusCode == http.StatusForbidden:
		return nil, "", "", &ResolveError{Status: http.StatusUnauthorized, Err: fmt.Errorf("registry %s denied access to %s (%d)", ref.Registry, ref.Repository, resp.StatusCode)}
	case resp.StatusCode != http.StatusOK:
		return nil, "", "", &ResolveError{Status: http.StatusBadGateway, Err: fmt.Errorf("registry %s: GET manifest %s: status %d", ref.Registry, reference, resp.StatusCode)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxManifestBytes+1))
	if err != nil {
		return nil, "", "", &ResolveError{Status: http.StatusBadGateway, Err: fmt.Errorf("registry %s: read manifest: %w", ref.Registry, err)}
	}
	if len(b) > maxManifestBytes {
		return nil, "", "", &ResolveError{Status: http.StatusBadGateway, Err: fmt.Errorf("registry %s: manifest larger than %d bytes", ref.Registry, maxManifestBytes)}
	}
	var m manifestDoc
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, "", "", &ResolveError{Status: http.StatusBadGateway, Err: fmt.Errorf("registry %s: manifest %s is not valid JSON", ref.Registry, reference)}
	}
	mt := m.MediaType
	if ct := resp.Header.Get("Content-Type"); ct != "" && ct != "application/json" {
		mt = strings.TrimSpace(strings.Split(ct, ";")[0])
	}
	return &m, mt, resp.Header.Get("Docker-Content-Digest"), nil
}

func (r *Resolver) do(ctx context.Context, u string, auth *authState) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", manifestAccept)
	for k, v := range auth.cred.Headers {
		req.Header.Set(k, v)
	}
	if auth.header != "" {
		req.Header.Set("Authorization", auth.header)
	} else if auth.cred.Username != "" {
		req.SetBasicAuth(auth.cred.Username, auth.cred.Password)
	}
	return r.client.Do(req)
}

// authorize answers a 401 challenge: Basic → use the username/password;
// Bearer → fetch a pull token from the realm (with basic credentials when
// given) and use it for the manifest and, later, the agents.
func (r *Resolver) authorize(ctx context.Context, challenge string, ref Ref, auth *authState) error {
	deny := func(format string, a ...any) error {
		return &ResolveError{Status: http.StatusUnauthorized, Err: fmt.Errorf(format, a...)}
	}
	scheme, params := parseChallenge(challenge)
	switch strings.ToLower(scheme) {
	case "basic":
		if auth.cred.Username == "" {
			return deny("registry %s requires credentials for %s", ref.Registry, ref.Repository)
		}
		if strings.HasPrefix(auth.header, "Basic ") {
			return deny("registry %s rejected the credentials for %s", ref.Registry, ref.Repository)
		}
		auth.header = "Basic " + base64.StdEncoding.EncodeToString([]byte(auth.cred.Username+":"+auth.cred.Password))
		return nil
	case "bearer":
	default:
		return deny("registry %s: unauthorized and no usable challenge", ref.Registry)
	}
	realm := params["realm"]
	if realm == "" {
		return deny("registry %s: bearer challenge without realm", ref.Registry)
	}
	q := url.Values{}
	if s := params["service"]; s != "" {
		q.Set("service", s)
	}
	scope := params["scope"]
	if scope == "" {
		scope = "repository:" + ref.Repository + ":pull"
	}
	q.Set("scope", scope)
	tu, err := url.Parse(realm)
	if err != nil {
		return deny("registry %s: malformed token realm", ref.Registry)
	}
	tu.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tu.String(), nil)
	if err != nil {
		return deny("token request: %v", err)
	}
	if auth.cred.Username != "" {
		req.SetBasicAuth(auth.cred.Username, auth.cred.Password)
	}
	resp, err := r.client.Do(req)
	if err != nil {
		return r.unreachable("token service "+tu.Host, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return deny("token service %s refused a pull token for %s: status %d", tu.Host, ref.Repository, resp.StatusCode)
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&tok); err != nil {
		return &ResolveError{Status: http.StatusBadGateway, Err: fmt.Errorf("token service %s: malformed response", tu.Host)}
	}
	t := tok.Token
	if t == "" {
		t = tok.AccessToken
	}
	if t == "" {
		return &ResolveError{Status: http.StatusBadGateway, Err: errors.New("token service returned no token")}
	}
	if auth.header == "Bearer "+t {
		return deny("registry %s rejected the token for %s", ref.Registry, ref.Repository)
	}
	auth.header = "Bearer " + t
	return nil
}

// parseChallenge splits `Bearer realm="…",service="…",scope="…"`.
func parseChallenge(h string) (string, map[string]string) {
	scheme, rest, _ := strings.Cut(strings.TrimSpace(h), " ")
	params := map[string]string{}
	for rest != "" {
		rest = strings.TrimLeft(rest, " ,")
		k, v, ok := strings.Cut(rest, "=")
		if !ok {
			break
		}
		k = strings.ToLower(strings.TrimSpace(k))
		if strings.HasPrefix(v, `"`) {
			end := strings.Index(v[1:], `"`)
			if end < 0 {
				params[k] = v[1:]
				break
			}
			params[k] = v[1 : end+1]
			rest = v[end+2:]
		} else {
			val, r, _ := strings.Cut(v, ",")
			params[k] = val
			rest = r
		}
	}
	return scheme, params
}
