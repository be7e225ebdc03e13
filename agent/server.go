package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"strings"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/internal/fetch"
	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/agent/internal/partial"
	"github.com/shoalproject/shoal/agent/internal/store"
	"github.com/shoalproject/shoal/internal/httprange"
)

var (
	// Repository name grammar of the OCI distribution spec.
	nameRe = regexp.MustCompile(`^[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*(/[a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagRe  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
	hexRe  = regexp.MustCompile(`^[a-f0-9]+$`)
)

// ociError writes an OCI distribution error body.
func ociError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(map[string]any{"errors": []map[string]string{{"code": code, "message": msg}}})
}

// mirrorHandler is the mirror listener's: the OCI routes under /v2/ (OCI
// errors), /healthz and /metrics (the house shapes). /metrics answers
// loopback clients, and others only with metrics.token: the mirror may
// listen beyond loopback, and what a node pulls is no one else's to read.
func (a *Agent) mirrorHandler() http.Handler {
	r := newRouter()
	r.Handle("/healthz", a.obs.health)
	r.Handle("/metrics", loopbackOr(a.obs.metricsToken, a.obs.metricsHandler))
	r.PathPrefix("/v2").HandlerFunc(countMirrorRequest(a.metrics.requests, a.handleV2))
	return r
}

func (a *Agent) handleV2(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "the agent is a read-only mirror")
		return
	}
	ns := r.URL.Query().Get("ns")
	up, ok := a.pickUpstream(ns)
	if !ok {
		ociError(w, http.StatusNotFound, "NAME_UNKNOWN", fmt.Sprintf("no upstream configured for ns=%q", ns))
		return
	}
	path := r.URL.Path
	if path == "/v2" || path == "/v2/" {
		a.proxy(w, r, up.URL+"/v2/")
		return
	}
	rest := strings.TrimPrefix(path, "/v2/")
	for _, kind := range []string{"/blobs/", "/manifests/", "/tags/", "/referrers/"} {
		i := strings.LastIndex(rest, kind)
		if i <= 0 {
			continue
		}
		name, ref := rest[:i], rest[i+len(kind):]
		if !nameRe.MatchString(name) || len(name) > 255 {
			ociError(w, http.StatusBadRequest, "NAME_INVALID", "invalid repository name")
			return
		}
		switch kind {
		case "/blobs/":
			if strings.HasPrefix(ref, "uploads") {
				ociError(w, http.StatusMethodNotAllowed, "UNSUPPORTED", "the agent is a read-only mirror")
				return
			}
			algo, hexd, err := parseDigest(ref)
			if err != nil {
				ociError(w, http.StatusBadRequest, "DIGEST_INVALID", err.Error())
				return
			}
			if algo != "sha256" {
				// Not cacheable (the cache verifies sha256): pass through.
				a.proxy(w, r, up.URL+path)
				return
			}
			a.serveBlob(w, r, up, name, hexd)
		case "/manifests/":
			if strings.Contains(ref, ":") {
				if _, _, err := parseDigest(ref); err != nil {
					ociError(w, http.StatusBadRequest, "DIGEST_INVALID", err.Error())
					return
				}
			} else if !tagRe.MatchString(ref) {
				ociError(w, http.StatusBadRequest, "TAG_INVALID", "invalid tag")
				return
			}
			a.proxy(w, r, up.URL+path)
		default:
			a.proxy(w, r, up.URL+path)
		}
		return
	}
	ociError(w, http.StatusNotFound, "NAME_UNKNOWN", "unknown endpoint")
}

func parseDigest(s string) (algo, hexd string, err error) {
	algo, hexd, ok := strings.Cut(s, ":")
	if !ok {
		return "", "", fmt.Errorf("invalid digest %q", s)
	}
	want := map[string]int{"sha256": 64, "sha512": 128}[algo]
	if want == 0 {
		return "", "", fmt.Errorf("unsupported digest algorithm %q", algo)
	}
	if len(hexd) != want || !hexRe.MatchString(hexd) {
		return "", "", fmt.Errorf("invalid %s digest", algo)
	}
	return algo, hexd, nil
}

// proxy passes a request through to the upstream unchanged (manifests,
// tags, /v2/): the client's Authorization and Accept go up, the upstream's
// status, headers (WWW-Authenticate included) and body come back.
func (a *Agent) proxy(w http.ResponseWriter, r *http.Request, target string) {
	q := r.URL.Query()
	q.Del("ns")
	if enc := q.Encode(); enc != "" {
		target += "?" + enc
	}
	req, err := http.NewRequestWithContext(r.Context(), r.Method, target, nil)
	if err != nil {
		ociError(w, http.StatusBadRequest, "UNSUPPORTED", err.Error())
		return
	}
	for _, h := range []string{"Authorization", "Accept", "Range", "If-None-Match", "User-Agent"} {
		for _, v := range r.Header.Values(h) {
			req.Header.Add(h, v)
		}
	}
	resp, err := a.origin.Do(req)
	if err != nil {
		a.log.WithError(err).WithField("url", target).Warn("upstream request failed")
		ociError(w, http.StatusBadGateway, "UNAVAILABLE", "upstream registry unreachable")
		return
	}
	defer resp.Body.Close()
	copyHeaders(w.Header(), resp.Header)
	w.WriteHeader(resp.StatusCode)
	if r.Method != http.MethodHead {
		_, _ = io.Copy(w, resp.Body)
	}
}

var passHeaders = []string{"Content-Type", "Content-Length", "Docker-Content-Digest", "WWW-Authenticate",
	"Docker-Distribution-Api-Version", "Etag", "Link", "Content-Range", "Accept-Ranges", "Oci-Subject", "Oci-Filters-Applied", "Location"}

func copyHeaders(dst, src http.Header) {
	for _, h := range passHeaders {
		for _, v := range src.Values(h) {
			dst.Add(h, v)
		}
	}
}

// relayUpstreamError gives the client the upstream's refusal unchanged.
func relayUpstreamError(w http.ResponseWriter, r *http.Request, ue *origin.UpstreamError) {
	copyHeaders(w.Header(), ue.Header)
	w.Header().Del("Content-Length")
	body := ue.Body
	if len(body) == 0 && r.Method != http.MethodHead {
		code := map[int]string{401: "UNAUTHORIZED", 403: "DENIED", 404: "BLOB_UNKNOWN"}[ue.Status]
		if code == "" {
			code = "UNKNOWN"
		}
		ociError(w, ue.Status, code, http.StatusText(ue.Status))
		return
	}
	w.WriteHeader(ue.Status)
	if r.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}

// parseRange reads a request's Range values (httprange's rules) as an
// inclusive span; no Range is the whole blob.
func parseRange(values []string, size int64) (start, end int64, partial bool, err error) {
	if len(values) == 0 {
		return 0, size - 1, false, nil
	}
	first, n, ok := httprange.Parse(values, size)
	if !ok {
		return 0, 0, false, errors.New("a single satisfiable range, bytes=first-last, is required")
	}
	return first, first + n - 1, true, nil
}

// serveBlob answers a blob request from the cache or from the blob's
// download (fetch.Fetcher.Acquire), bytes going out as they arrive and are
// checked.
func (a *Agent) serveBlob(w http.ResponseWriter, r *http.Request, up *Upstream, repo, hexd string) {
	log := a.log.WithFields(logrus.Fields{"repo": repo, "digest": "sha256:" + hexd})
	src, err := a.fetch.Acquire(r.Context(), fetch.Request{Base: up.URL, Repo: repo, Hex: hexd, Auth: r.Header.Get("Authorization")}, r.Method == http.MethodHead)
	if errors.Is(err, fetch.ErrNotCached) {
		a.proxy(w, r, origin.BlobURL(up.URL, repo, hexd))
		return
	}
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	defer src.Close()
	start, end, partial, err := parseRange(r.Header.Values("Range"), src.Size)
	if err != nil {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes */%d", src.Size))
		ociError(w, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID", err.Error())
		return
	}
	if src.Flight == nil && r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "application/octet-stream")
		w.Header().Set("Docker-Content-Digest", "sha256:"+hexd)
		w.Header().Set("Content-Length", strconv.FormatInt(src.Size, 10))
		w.WriteHeader(http.StatusOK)
		return
	}
	// A descriptor of our own on the blob file (own offset, for
	// sendfile), valid after a partial file is renamed into the cache.
	file, err := src.Reader.Open()
	if err != nil {
		a.writeErr(w, r, err)
		return
	}
	defer file.Close()
	blobHeaders(w, hexd, src.Size, start, end, partial)
	if src.Flight == nil {
		n, _ := store.SendRange(r.Context(), w, file, start, end-start+1, nil)
		a.metrics.bytes.WithLabelValues(sourceCache).Add(float64(n))
		return
	}
	sent := stream(r.Context(), w, log, src.Flight, file, start, end, src.Size)
	if partial {
		a.metrics.ranges.WithLabelValues(sent.kind()).Inc()
	}
}

// wantWindow is how many pieces ahead of its position a Range reader
// makes urgent.
const wantWindow = 16

// streamed is how a stream's bytes went out.
type streamed struct {
	early int64 // sent before the blob was whole, each piece's SHA-1 matched first
	total int64
}

func (s streamed) kind() string {
	if s.early > 0 {
		return "early"
	}
	return "stream"
}

// stream sends bytes [start, end] of a downloading blob as they become
// readable through file, a descriptor of the caller's own on its file. A
// Range request of a blob with piece hashes is answered piece by piece,
// each as soon as it is present and its SHA-1 matched, wherever it lies:
// its pieces are the flight's Wants, which the engine fetches first.
func stream(ctx context.Context, w http.ResponseWriter, log *logrus.Entry, f *origin.Flight, file *os.File, start, end, size int64) streamed {
	// A range that ends before the blob does gets no protection from the
	// held-back last byte: its pieces' SHA-1 is computed and matched before
	// they go out, those of the trusted registry included.
	early := end < size-1
	rs := &rangeSender{ctx: ctx, w: w, log: log, f: f, file: file, end: end, size: size,
		early: early, ranged: start > 0 || early, wantedTo: -1}
	defer rs.unwant()
	b := f.Blob
	for off := start; off <= end; {
		readable, _, sealed, ferr, ch := b.Readable()
		var sent int64
		var ok bool
		switch pl := b.PieceLength(); {
		case rs.ranged && pl > 0 && !sealed && off >= readable:
			sent, ok = rs.piece(off, pl)
		case off < readable:
			sent, ok = rs.prefix(off, readable, sealed)
		default:
			ok = true // nothing readable yet
		}
		if !ok {
			return rs.out
		}
		if sent == 0 && !awaitMore(ctx, log, ferr, ch) {
			return rs.out
		}
		off += sent
	}
	return rs.out
}

// rangeSender is one stream's state: where the reader's wanted pieces
// reach, and what went out.
type rangeSender struct {
	ctx           context.Context
	w             http.ResponseWriter
	log           *logrus.Entry
	f             *origin.Flight
	file          *os.File
	end, size     int64
	early, ranged bool
	// The wanted pieces are a window ahead of the reader: a range of a
	// whole multi-GiB blob must not make all of it urgent at once.
	wantedTo int64
	release  func()
	out      streamed
}

func (rs *rangeSender) unwant() {
	if rs.release != nil {
		rs.release()
	}
}

// piece sends what is left of the piece off lies in, beyond the readable
// prefix, once it is present and its SHA-1 matched; 0 bytes and ok: wait
// for it. Not ok: the client went away.
func (rs *rangeSender) piece(off, pl int64) (sent int64, ok bool) {
	b := rs.f.Blob
	i := off / pl
	if i > rs.wantedTo {
		rs.unwant()
		rs.wantedTo = min(rs.end/pl, i+wantWindow-1)
		rs.release = rs.f.Wants.Add(int(i), int(rs.wantedTo))
	}
	if !b.Present(int(i)) {
		return 0, true
	}
	if err := b.EnsureVerified(i*pl, min(pl, rs.size-i*pl)); err != nil {
		rs.log.WithError(err).Warn("piece of a range failed its check; aborting response")
		panic(http.ErrAbortHandler)
	}
	sent, err := store.SendRange(rs.ctx, rs.w, rs.file, off, min((i+1)*pl-1, rs.end)+1-off, nil)
	rs.out.early += sent
	rs.out.total += sent
	return sent, err == nil
}

// prefix sends from the readable prefix; 0 bytes and ok: wait for the
// blob to move on.
func (rs *rangeSender) prefix(off, readable int64, sealed bool) (sent int64, ok bool) {
	n := min(readable, rs.end+1) - off
	if rs.early {
		err := rs.f.Blob.EnsureVerified(off, n)
		if errors.Is(err, partial.ErrUncheckable) {
			// A plain stream has no piece hashes: these bytes go out
			// once the whole blob matched its digest.
			return 0, true
		}
		if err != nil {
			rs.log.WithError(err).Warn("range of a blob failed its check; aborting response")
			panic(http.ErrAbortHandler)
		}
	}
	sent, err := store.SendRange(rs.ctx, rs.w, rs.file, off, n, nil)
	rs.out.total += sent
	if rs.early && !sealed {
		// Verified piece by piece (EnsureVerified) and sent before the
		// blob was whole, like the pieces beyond the prefix: that they lay
		// in the prefix (a range from byte 0, pieces arriving in order)
		// changes nothing.
		rs.out.early += sent
	}
	return sent, err == nil
}

// awaitMore waits for more of a streaming blob (ch), false when the client
// went away. A failed download (ferr) aborts the response: the headers are
// out, so cutting the connection is how the client sees a truncated body,
// not a short "complete" one.
func awaitMore(ctx context.Context, log *logrus.Entry, ferr error, ch <-chan struct{}) bool {
	if ferr != nil {
		log.WithError(ferr).Warn("download failed while streaming; aborting response")
		panic(http.ErrAbortHandler)
	}
	select {
	case <-ch:
		return true
	case <-ctx.Done():
		return false
	}
}

func blobHeaders(w http.ResponseWriter, hexd string, size, start, end int64, partial bool) {
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Docker-Content-Digest", "sha256:"+hexd)
	w.Header().Set("Accept-Ranges", "bytes")
	w.Header().Set("Content-Length", strconv.FormatInt(end-start+1, 10))
	if partial {
		w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, size))
		w.WriteHeader(http.StatusPartialContent)
		return
	}
	w.WriteHeader(http.StatusOK)
}

func (a *Agent) writeErr(w http.ResponseWriter, r *http.Request, err error) {
	var ue *origin.UpstreamError
	if errors.As(err, &ue) {
		relayUpstreamError(w, r, ue)
		return
	}
	var re *origin.RequestError
	if errors.As(err, &re) {
		ociError(w, re.Status, re.Code, re.Msg)
		return
	}
	if errors.Is(err, context.Canceled) {
		return
	}
	a.log.WithError(err).Warn("blob request failed")
	ociError(w, http.StatusBadGateway, "UNAVAILABLE", err.Error())
}
