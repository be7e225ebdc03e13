package registry

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"path"
	"strconv"
	"strings"
	"time"

	"github.com/distribution/distribution/v3"
	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/distribution/distribution/v3/registry/auth"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	storagemiddleware "github.com/distribution/distribution/v3/registry/storage/driver/middleware"
	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"github.com/sirupsen/logrus"
)

var specsVersioned = specs.Versioned{SchemaVersion: 2}

// OCI 1.1 on top of distribution v3.1.2, which predates it: the referrers
// API, OCI-Subject, sha512 manifests and the sha512 blob paths distribution
// gets wrong, single-POST uploads and anonymous mounts. Two pieces, both
// outside distribution: a front handler on /v2/ (new routes, and rewrites
// of requests and headers around distribution's own handlers, which still
// authorize and store everything they handle), and an observer of the
// manifests middleware (manifests.go) that keeps the referrers index in
// step with manifest pushes and deletes.
const (
	ociStorageMW = "shoal-oci-storage"
	ociOption    = "shoal.oci"

	headerSubject        = "OCI-Subject"
	headerFiltersApplied = "OCI-Filters-Applied"

	// maxManifestBody is distribution's own limit on a manifest PUT.
	maxManifestBody = 4 << 20
)

func init() {
	if err := storagemiddleware.Register(ociStorageMW, func(_ context.Context, sd storagedriver.StorageDriver, options map[string]any) (storagedriver.StorageDriver, error) {
		o, ok := options[ociOption].(*ociFront)
		if !ok {
			return nil, fmt.Errorf("storage middleware %s is added by shoal itself; do not configure it", ociStorageMW)
		}
		o.d = sd
		o.index = referrerIndex{d: sd}
		return sd, nil
	}); err != nil {
		panic(err)
	}
}

// ociFront is the front handler and the state the storage middleware and
// the observer share.
type ociFront struct {
	d        storagedriver.StorageDriver // the outermost driver distribution uses
	index    referrerIndex
	ac       auth.AccessController // nil without auth
	readOnly bool                  // maintenance read-only or a pull-through cache
	log      *logrus.Entry
}

// newOCIFront adds the storage middleware to cfg, last, so it sees the
// driver distribution writes through; the caller adds ociObserver to the
// manifests middleware.
func newOCIFront(cfg *configuration.Configuration, log *logrus.Entry) (*ociFront, error) {
	o := &ociFront{log: log.WithField("component", "registry-oci")}
	if t := cfg.Auth.Type(); t != "" && !strings.EqualFold(t, "none") {
		ac, err := auth.GetAccessController(t, cfg.Auth.Parameters())
		if err != nil {
			return nil, fmt.Errorf("registry auth %s: %w", t, err)
		}
		o.ac = ac
	}
	switch ro := cfg.Storage["maintenance"]["readonly"].(type) {
	case map[any]any:
		o.readOnly = ro["enabled"] == true
	case map[string]any:
		o.readOnly = ro["enabled"] == true
	}
	// A pull-through cache refuses pushes; it must not take mounts either.
	o.readOnly = o.readOnly || cfg.Proxy.RemoteURL != ""
	opts := configuration.Parameters{ociOption: o}
	cfg.Middleware["storage"] = append(cfg.Middleware["storage"], configuration.Middleware{Name: ociStorageMW, Options: opts})
	return o, nil
}

// ctxKey carries a pushNote from the front handler to the middleware
// handling the same request.
type ctxKey struct{}

// pushNote is what a manifest PUT's middleware tells the front handler
// (the subject, for OCI-Subject) and hears from it (the digest the client
// addressed the manifest by, when that is not the sha256 it is stored as).
type pushNote struct {
	alias   digest.Digest
	subject digest.Digest
}

// route splits /v2/<name>/<kind>/<rest>; kind is blobs, manifests or referrers.
func route(p string) (name, kind, rest string, ok bool) {
	p, ok = strings.CutPrefix(p, "/v2/")
	if !ok {
		return "", "", "", false
	}
	best := -1
	for _, k := range []string{"/blobs/", "/manifests/", "/referrers/"} {
		if i := strings.LastIndex(p, k); i > best {
			best, kind, rest = i, k[1:len(k)-1], p[i+len(k):]
		}
	}
	if best <= 0 {
		return "", "", "", false
	}
	return p[:best], kind, rest, true
}

// serve handles what distribution does not, or does differently from the
// spec, and hands everything else to next untouched. Only string checks run
// for ordinary traffic.
func (o *ociFront) serve(w http.ResponseWriter, r *http.Request, next http.Handler) {
	name, kind, rest, ok := route(r.URL.Path)
	if !ok {
		next.ServeHTTP(w, r)
		return
	}
	switch kind {
	case "referrers":
		if r.Method == http.MethodGet || r.Method == http.MethodHead {
			o.referrers(w, r, name, rest)
			return
		}
	case "manifests":
		switch {
		case r.Method == http.MethodPut:
			o.putManifest(w, r, next, name, rest)
			return
		case r.Method == http.MethodDelete && isOtherDigest(rest):
			o.deleteManifest(w, r, next, name, rest)
			return
		}
	case "blobs":
		if rest == "uploads/" || rest == "uploads" {
			if r.Method == http.MethodPost {
				o.startUpload(w, r, next, name)
				return
			}
			break
		}
		if strings.HasPrefix(rest, "uploads/") {
			if r.Method == http.MethodPut && isOtherDigest(r.URL.Query().Get("digest")) {
				o.finishUpload(w, r, next, name, digest.Digest(r.URL.Query().Get("digest")))
				return
			}
			break
		}
		if (r.Method == http.MethodGet || r.Method == http.MethodHead) && isOtherDigest(rest) {
			// A blob uploaded by sha512 to an upstream registry is stored
			// under its sha256 with a sha512 link to it; distribution then
			// answers with the sha256. (Shoal's own are stored under their
			// sha512 and need nothing.)
			next.ServeHTTP(&headerHook{ResponseWriter: w, log: o.log, hook: func(status int, h http.Header) error {
				if status/100 == 2 {
					h.Set("Docker-Content-Digest", rest)
					h.Set("Etag", `"`+rest+`"`)
				}
				return nil
			}}, r)
			return
		}
	}
	next.ServeHTTP(w, r)
}

// isOtherDigest tells whether s is a digest of another algorithm than
// distribution's canonical sha256; a cheap check, parsed properly later.
func isOtherDigest(s string) bool {
	alg, _, ok := strings.Cut(s, ":")
	return ok && alg != string(digest.SHA256)
}

func serveError(w http.ResponseWriter, err error) {
	_ = errcode.ServeJSON(w, err)
}

// authorize checks access the way distribution does for its own routes.
func (o *ociFront) authorize(w http.ResponseWriter, r *http.Request, name, action string) bool {
	if o.ac == nil {
		return true
	}
	access := auth.Access{Resource: auth.Resource{Type: "repository", Name: name}, Action: action}
	if _, err := o.ac.Authorized(r, access); err != nil {
		if ch, ok := err.(auth.Challenge); ok {
			ch.SetHeaders(r, w)
			serveError(w, errcode.ErrorCodeUnauthorized.WithDetail([]auth.Access{access}))
			return false
		}
		o.log.WithError(err).Error("checking authorization")
		serveError(w, errcode.ErrorCodeDenied)
		return false
	}
	return true
}

// referrers answers GET /v2/<name>/referrers/<digest>: an OCI index of the
// manifests in name whose subject is digest, filtered by artifactType.
func (o *ociFront) referrers(w http.ResponseWriter, r *http.Request, name, ref string) {
	if _, err := reference.WithName(name); err != nil {
		serveError(w, v2.ErrorCodeNameInvalid.WithDetail(err.Error()))
		return
	}
	subject, err := digest.Parse(ref)
	if err != nil {
		serveError(w, v2.ErrorCodeDigestInvalid.WithDetail(err.Error()))
		return
	}
	if !o.authorize(w, r, name, "pull") {
		return
	}
	at := r.URL.Query().Get("artifactType")
	list, err := o.index.list(r.Context(), name, subject, at)
	if err != nil {
		o.log.WithError(err).WithField("repository", name).Error("list referrers")
		serveError(w, errcode.ErrorCodeUnknown.WithDetail("could not read the referrers index"))
		return
	}
	body, err := json.Marshal(v1.Index{
		Versioned: specsVersioned,
		MediaType: v1.MediaTypeImageIndex,
		Manifests: list,
	})
	if err != nil {
		serveError(w, errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}
	w.Header().Set("Content-Type", v1.MediaTypeImageIndex)
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	if at != "" {
		w.Header().Set(headerFiltersApplied, "artifactType")
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, _ = w.Write(body)
	}
}

// parseNameDigest checks a repository name and a digest reference,
// answering the OCI error itself when one is invalid.
func parseNameDigest(w http.ResponseWriter, name, ref string) (digest.Digest, bool) {
	dg, err := digest.Parse(ref)
	if err != nil {
		serveError(w, v2.ErrorCodeDigestInvalid.WithDetail(err.Error()))
		return "", false
	}
	if _, err := reference.WithName(name); err != nil {
		serveError(w, v2.ErrorCodeNameInvalid.WithDetail(err.Error()))
		return "", false
	}
	return dg, true
}

// putManifest adds OCI-Subject to a manifest PUT's answer and stores a
// manifest pushed by a sha512 digest under its sha256, with an alias link.
func (o *ociFront) putManifest(w http.ResponseWriter, r *http.Request, next http.Handler, name, ref string) {
	note := &pushNote{}
	var alias digest.Digest
	if isOtherDigest(ref) {
		dg, ok := parseNameDigest(w, name, ref)
		if !ok {
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, maxManifestBody+1))
		if err != nil {
			serveError(w, v2.ErrorCodeManifestInvalid.WithDetail("reading manifest: "+err.Error()))
			return
		}
		if len(body) > maxManifestBody {
			serveError(w, v2.ErrorCodeManifestInvalid.WithDetail(fmt.Sprintf("manifest larger than %d bytes", maxManifestBody)))
			return
		}
		if dg.Algorithm().FromBytes(body) != dg {
			serveError(w, v2.ErrorCodeDigestInvalid.WithDetail("manifest does not match digest "+dg.String()))
			return
		}
		canonical := digest.SHA256.FromBytes(body)
		// distribution stores the manifest as a sha256 revision; if that
		// revision is new, it is replaced by the sha512 one below.
		_, err = o.d.Stat(r.Context(), manifestRevisionLink(name, canonical))
		hadCanonical := err == nil
		r = rewritePath(r, "/v2/"+name+"/manifests/"+canonical.String())
		r.Body, r.ContentLength = io.NopCloser(bytes.NewReader(body)), int64(len(body))
		alias, note.alias = dg, dg
		// What distribution committed must be completed even if the
		// client goes away meanwhile.
		ctx := context.WithoutCancel(r.Context())
		w = &headerHook{ResponseWriter: w, log: o.log, hook: func(status int, h http.Header) error {
			if status != http.StatusCreated {
				return nil
			}
			if err := o.storeAs(ctx, canonical, alias); err != nil {
				return err
			}
			if err := o.d.PutContent(ctx, manifestRevisionLink(name, alias), []byte(alias.String())); err != nil {
				return fmt.Errorf("link manifest %s: %w", alias, err)
			}
			if !hadCanonical {
				if err := o.d.Delete(ctx, path.Dir(manifestRevisionLink(name, canonical))); err != nil && !isPathNotFound(err) {
					o.log.WithError(err).Warn("removing the sha256 revision of a sha512 manifest")
				}
			}
			replaceDigest(h, canonical, alias)
			return nil
		}}
	}
	r = r.WithContext(context.WithValue(r.Context(), ctxKey{}, note))
	next.ServeHTTP(&headerHook{ResponseWriter: w, log: o.log, hook: func(status int, h http.Header) error {
		if status == http.StatusCreated && note.subject != "" {
			h.Set(headerSubject, note.subject.String())
		}
		return nil
	}}, r)
}

// deleteManifest deletes a manifest addressed by its sha512 digest: the
// alias (distribution removes it and the index entry goes with it), then
// the sha256 revision it named, which nobody can address any more.
func (o *ociFront) deleteManifest(w http.ResponseWriter, r *http.Request, next http.Handler, name, ref string) {
	dg, ok := parseNameDigest(w, name, ref)
	if !ok {
		return
	}
	canonical, _ := readLink(r.Context(), o.d, manifestRevisionLink(name, dg))
	rec := &statusRecorder{ResponseWriter: w}
	next.ServeHTTP(rec, r)
	if rec.status != http.StatusAccepted || canonical == "" || canonical.Algorithm() != digest.SHA256 {
		return
	}
	sub := rewritePath(r, "/v2/"+name+"/manifests/"+canonical.String())
	res := httptest.NewRecorder()
	next.ServeHTTP(res, sub)
	if res.Code != http.StatusAccepted && res.Code != http.StatusNotFound {
		o.log.WithFields(logrus.Fields{"repository": name, "manifest": canonical, "status": res.Code}).Warn("could not delete the sha256 revision of a deleted sha512 manifest")
	}
}

// startUpload adds what distribution lacks to POST .../blobs/uploads/:
// a whole blob in the POST (?digest=), anonymous mounts (?mount= without
// from=) and mounts of blobs pushed with a sha512 digest.
func (o *ociFront) startUpload(w http.ResponseWriter, r *http.Request, next http.Handler, name string) {
	q := r.URL.Query()
	mount, from, dgs := q.Get("mount"), q.Get("from"), q.Get("digest")
	switch {
	case mount != "" && from != "" && isOtherDigest(mount):
		o.mountOther(w, r, next, name, mount, from)
	case mount != "" && from == "":
		if !o.mountAnonymous(w, r, name, mount) {
			next.ServeHTTP(w, r)
		}
	case mount == "" && dgs != "":
		o.postWhole(w, r, next, name, dgs)
	default:
		next.ServeHTTP(w, r)
	}
}

// mountOther mounts a sha512-addressed blob: distribution's own mount links
// the sha512 digest to itself, which resolves to nothing. The source's alias
// names the sha256 blob; distribution mounts that (authorizing pull on from
// and push on name) and Shoal adds the sha512 link beside it.
func (o *ociFront) mountOther(w http.ResponseWriter, r *http.Request, next http.Handler, name, mount, from string) {
	dg, err := digest.Parse(mount)
	_, nerr := reference.WithName(name)
	_, ferr := reference.WithName(from)
	if err != nil || nerr != nil || ferr != nil {
		next.ServeHTTP(w, r) // distribution gives its own errors
		return
	}
	canonical, err := readLink(r.Context(), o.d, layerLink(from, dg))
	if err != nil || canonical.Algorithm() != digest.SHA256 {
		next.ServeHTTP(w, r) // not there: distribution starts an upload
		return
	}
	q := r.URL.Query()
	q.Set("mount", canonical.String())
	sub := r.Clone(r.Context())
	sub.URL.RawQuery = q.Encode()
	sub.RequestURI = sub.URL.RequestURI()
	next.ServeHTTP(&headerHook{ResponseWriter: w, log: o.log, hook: func(status int, h http.Header) error {
		if status != http.StatusCreated {
			return nil
		}
		if err := o.linkOwn(context.WithoutCancel(r.Context()), name, canonical, dg); err != nil {
			return err
		}
		replaceDigest(h, canonical, dg)
		return nil
	}}, sub)
}

// linkOwn gives a blob distribution stored under its sha256 a copy under
// its own (sha512) digest and links that in repo. distribution links the
// sha512 digest to the sha256 blob instead, which its garbage collector
// gets wrong: it marks the sha512 digest a manifest names, sweeps the
// sha256 blob behind it, and stops on the second of two links to it.
func (o *ociFront) linkOwn(ctx context.Context, repo string, canonical, own digest.Digest) error {
	if err := o.storeAs(ctx, canonical, own); err != nil {
		return err
	}
	if err := o.d.PutContent(ctx, layerLink(repo, own), []byte(own.String())); err != nil {
		return fmt.Errorf("link %s in %s: %w", own, repo, err)
	}
	return nil
}

// storeAs copies the blob stored as canonical to the blob store path of
// own, verifying own on the way; through a temporary file and a move, so
// a blob present under own is always whole.
func (o *ociFront) storeAs(ctx context.Context, canonical, own digest.Digest) error {
	dst := blobDataPath(own)
	if fi, err := o.d.Stat(ctx, dst); err == nil && !fi.IsDir() {
		return nil
	}
	rd, err := o.d.Reader(ctx, blobDataPath(canonical), 0)
	if err != nil {
		return fmt.Errorf("read %s: %w", canonical, err)
	}
	defer rd.Close()
	tmp := path.Join(v2Root, "_shoal/tmp", own.Encoded()+"-"+strconv.FormatInt(time.Now().UnixNano(), 36))
	fw, err := o.d.Writer(ctx, tmp, false)
	if err != nil {
		return fmt.Errorf("store %s: %w", own, err)
	}
	v := own.Verifier()
	if _, err := io.Copy(io.MultiWriter(fw, v), rd); err != nil {
		_ = fw.Cancel(ctx)
		return fmt.Errorf("copy %s to %s: %w", canonical, own, err)
	}
	if !v.Verified() {
		_ = fw.Cancel(ctx)
		return fmt.Errorf("blob %s does not match %s", canonical, own)
	}
	if err := fw.Commit(ctx); err != nil {
		return fmt.Errorf("store %s: %w", own, err)
	}
	if err := fw.Close(); err != nil {
		return fmt.Errorf("store %s: %w", own, err)
	}
	if err := o.d.Move(ctx, tmp, dst); err != nil {
		return fmt.Errorf("store %s: %w", own, err)
	}
	return nil
}

// mountAnonymous links a blob the registry holds into name without a source
// repository. Only without auth: with it, knowing a digest would be enough
// to copy a blob out of a repository the caller cannot read, so the caller
// gets the ordinary upload session instead (the spec allows both).
func (o *ociFront) mountAnonymous(w http.ResponseWriter, r *http.Request, name, mount string) bool {
	if o.ac != nil || o.readOnly {
		return false
	}
	dg, err := digest.Parse(mount)
	if err != nil {
		return false
	}
	if _, err := reference.WithName(name); err != nil {
		return false
	}
	ctx := r.Context()
	if fi, err := o.d.Stat(ctx, blobDataPath(dg)); err != nil || fi.IsDir() {
		return false
	}
	if err := o.d.PutContent(ctx, layerLink(name, dg), []byte(dg.String())); err != nil {
		serveError(w, errcode.ErrorCodeUnknown.WithDetail("could not link blob"))
		o.log.WithError(err).Error("anonymous mount")
		return true
	}
	w.Header().Set("Location", "/v2/"+name+"/blobs/"+dg.String())
	w.Header().Set("Docker-Content-Digest", dg.String())
	w.Header().Set("Content-Length", "0")
	w.WriteHeader(http.StatusCreated)
	return true
}

// postWhole implements the single-request upload (POST with ?digest= and
// the blob as body) as distribution's POST then PUT, each through
// distribution's handler with the client's credentials.
func (o *ociFront) postWhole(w http.ResponseWriter, r *http.Request, next http.Handler, name, dgs string) {
	start := r.Clone(r.Context())
	start.URL.RawQuery = ""
	start.RequestURI = start.URL.RequestURI()
	start.Body, start.ContentLength = http.NoBody, 0
	start.Header.Del("Content-Length")
	start.Header.Del("Content-Type")
	res := httptest.NewRecorder()
	next.ServeHTTP(res, start)
	loc := res.Header().Get("Location")
	if res.Code != http.StatusAccepted || loc == "" {
		copyRecorded(w, res)
		return
	}
	// The bytes go in a PATCH and the digest in an empty PUT, so that a
	// refused digest can still be cancelled: distribution's own cancel
	// after a failed PUT fails ("already closed"), and a DELETE needs the
	// upload state of the last successful request.
	patch := r.Clone(r.Context())
	patch.Method = http.MethodPatch
	if !setLocation(patch, loc) {
		serveError(w, errcode.ErrorCodeUnknown.WithDetail("bad upload location"))
		return
	}
	patch.Header.Set("Content-Type", "application/octet-stream")
	patch.Header.Del("Content-Range")
	res = httptest.NewRecorder()
	next.ServeHTTP(res, patch)
	if loc = res.Header().Get("Location"); res.Code != http.StatusAccepted || loc == "" {
		copyRecorded(w, res)
		return
	}
	put := r.Clone(r.Context())
	put.Method = http.MethodPut
	put.Body, put.ContentLength = http.NoBody, 0
	put.Header.Del("Content-Length")
	put.Header.Set("Content-Type", "application/octet-stream")
	setLocation(put, loc)
	q := put.URL.Query()
	q.Set("digest", dgs)
	put.URL.RawQuery = q.Encode()
	put.RequestURI = put.URL.RequestURI()
	rec := &statusRecorder{ResponseWriter: w}
	o.serve(rec, put, next)
	if rec.status/100 != 2 {
		// Leave no upload session behind a refused blob.
		cancel := r.Clone(context.WithoutCancel(r.Context()))
		cancel.Method = http.MethodDelete
		cancel.Body, cancel.ContentLength = http.NoBody, 0
		cancel.Header.Del("Content-Length")
		setLocation(cancel, loc)
		next.ServeHTTP(httptest.NewRecorder(), cancel)
	}
}

// setLocation points r at an upload Location distribution returned.
func setLocation(r *http.Request, loc string) bool {
	u, err := url.Parse(loc)
	if err != nil || !strings.HasPrefix(u.Path, "/v2/") {
		return false
	}
	r.URL.Path, r.URL.RawPath, r.URL.RawQuery = u.Path, "", u.RawQuery
	r.RequestURI = r.URL.RequestURI()
	return true
}

// finishUpload completes an upload with a sha512 digest. distribution
// verifies the sha512, stores the blob under its sha256, links both, and
// answers with the sha256; the client asked for the sha512.
func (o *ociFront) finishUpload(w http.ResponseWriter, r *http.Request, next http.Handler, name string, dg digest.Digest) {
	if dg.Validate() != nil {
		next.ServeHTTP(w, r)
		return
	}
	next.ServeHTTP(&headerHook{ResponseWriter: w, log: o.log, hook: func(status int, h http.Header) error {
		if status != http.StatusCreated {
			return nil
		}
		canonical, err := digest.Parse(h.Get("Docker-Content-Digest"))
		if err != nil || canonical == dg {
			return nil
		}
		if err := o.linkOwn(context.WithoutCancel(r.Context()), name, canonical, dg); err != nil {
			return err
		}
		replaceDigest(h, canonical, dg)
		return nil
	}}, r)
}

// replaceDigest makes a response name the digest the client used.
func replaceDigest(h http.Header, canonical, alias digest.Digest) {
	h.Set("Docker-Content-Digest", alias.String())
	if loc := h.Get("Location"); loc != "" {
		h.Set("Location", strings.Replace(loc, canonical.String(), alias.String(), 1))
	}
}

func rewritePath(r *http.Request, p string) *http.Request {
	r2 := r.Clone(r.Context())
	r2.URL.Path, r2.URL.RawPath = p, ""
	r2.RequestURI = r2.URL.RequestURI()
	return r2
}

func copyRecorded(w http.ResponseWriter, res *httptest.ResponseRecorder) {
	for k, v := range res.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(res.Code)
	_, _ = w.Write(res.Body.Bytes())
}

// headerHook calls hook with the status and headers just before they are
// sent; an error from it turns the response into a 500 with OCI error JSON
// (and drops what the handler writes after).
type headerHook struct {
	http.ResponseWriter
	log     *logrus.Entry
	hook    func(status int, h http.Header) error
	done    bool
	discard bool
}

func (h *headerHook) WriteHeader(status int) {
	if h.done {
		return
	}
	h.done = true
	if err := h.hook(status, h.Header()); err != nil {
		h.log.WithError(err).Error("completing response")
		for k := range h.Header() {
			h.Header().Del(k)
		}
		h.discard = true
		serveError(h.ResponseWriter, errcode.ErrorCodeUnknown.WithDetail("storing what the request created failed"))
		return
	}
	h.ResponseWriter.WriteHeader(status)
}

func (h *headerHook) Write(b []byte) (int, error) {
	if !h.done {
		h.WriteHeader(http.StatusOK)
	}
	if h.discard {
		return len(b), nil
	}
	return h.ResponseWriter.Write(b)
}

func (h *headerHook) Unwrap() http.ResponseWriter { return h.ResponseWriter }

// statusRecorder passes everything through and remembers the status.
type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (s *statusRecorder) WriteHeader(status int) {
	if s.status == 0 {
		s.status = status
	}
	s.ResponseWriter.WriteHeader(status)
}

func (s *statusRecorder) Write(b []byte) (int, error) {
	if s.status == 0 {
		s.status = http.StatusOK
	}
	return s.ResponseWriter.Write(b)
}

func (s *statusRecorder) Unwrap() http.ResponseWriter { return s.ResponseWriter }

// ociObserver keeps the referrers index in step with manifest pushes and
// deletes made through distribution.
type ociObserver struct{ o *ociFront }

func (ob ociObserver) manifestPut(ctx context.Context, repo distribution.Repository, _ distribution.ManifestService, man distribution.Manifest, dgst digest.Digest) error {
	mt, payload, perr := man.Payload()
	if perr != nil {
		return nil
	}
	note, _ := ctx.Value(ctxKey{}).(*pushNote)
	listed := dgst
	if note != nil && note.alias != "" {
		listed = note.alias
	}
	subject, desc, ok := referrerOf(mt, payload, listed)
	if !ok {
		return nil
	}
	// The push fails if the index cannot record it: a referrer the API
	// does not list would be lost to every client that discovers by subject.
	if err := ob.o.index.add(ctx, repo.Named().Name(), subject, desc); err != nil {
		return err
	}
	if note != nil {
		note.subject = subject
	}
	return nil
}

func (ob ociObserver) manifestDelete(ctx context.Context, repo distribution.Repository, ms distribution.ManifestService, dgst digest.Digest, del func() error) error {
	var subject digest.Digest
	if man, err := ms.Get(ctx, dgst); err == nil {
		if mt, payload, err := man.Payload(); err == nil {
			subject, _, _ = referrerOf(mt, payload, dgst)
		}
	}
	if err := del(); err != nil {
		return err
	}
	if subject != "" {
		if err := ob.o.index.remove(ctx, repo.Named().Name(), subject, dgst); err != nil {
			// The manifest is gone; listing skips entries without one.
			ob.o.log.WithError(err).Warn("referrers index")
		}
	}
	return nil
}
