package registry

import (
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	v2 "github.com/distribution/distribution/v3/registry/api/v2"
	"github.com/gorilla/mux"
	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/httprange"
	"github.com/shoalproject/shoal/internal/regshare"
)

// BlobPath is the prefix of the piece-range endpoint: a blob's bytes, by
// signed URL, for the agents' share of a blob that comes from the registry.
// Like TorrentPath it is under /v2/ and can never be a repository's path.
const BlobPath = "/v2/_shoal/blobs/"

// LegacyBlobPath is where piece-range URLs pointed before BlobPath; still
// served.
const LegacyBlobPath = "/_shoal/blobs/"

// BlobURLHeader is the response header of the torrent metadata endpoint that
// carries the blob's signed piece-range URL (absolute, same expiry as the
// torrent URL the metadata was fetched with).
const BlobURLHeader = "Shoal-Blob-Url"

// purposeBlob marks the tokens of piece-range URLs. It differs from
// purposeTorrent, so neither kind of URL token opens the other endpoint.
const purposeBlob = "blob"

// blobURL returns the signed piece-range URL of dgst in repo, valid until
// expiry.
func (s *Server) blobURL(r *http.Request, repo string, dgst digest.Digest, expiry time.Time) string {
	q := url.Values{}
	q.Set("repo", repo)
	q.Set("token", s.urlKeys.Sign(purposeBlob, urlSubject(repo, dgst), expiry))
	return s.baseURL(r) + BlobPath + dgst.String() + "?" + q.Encode()
}

// serveBlob answers a piece-range URL: the blob's bytes, or one range of
// them, without distribution's blob server in the way. distribution's
// filesystem blob reader allocates and zeroes a 4 MiB buffer per request and
// copies through user space; here the storage driver's reader is copied to
// the connection directly. For the filesystem driver that reader is the
// blob's *os.File, already seeked to the range, so net/http sends it with
// sendfile(2); other drivers (object stores) are streamed with net/http's
// 32 KiB copy buffer.
func (s *Server) serveBlob(w http.ResponseWriter, r *http.Request) {
	fail := func(result string, err error) {
		s.metrics.pieces.WithLabelValues(result).Inc()
		_ = errcode.ServeJSON(w, err)
	}
	dgst, err := digest.Parse(mux.Vars(r)["digest"])
	if err != nil {
		fail("bad_request", v2.ErrorCodeDigestInvalid.WithDetail(err.Error()))
		return
	}
	repo := r.URL.Query().Get("repo")
	if err := s.urlKeys.Verify(purposeBlob, urlSubject(repo, dgst), r.URL.Query().Get("token"), time.Now()); err != nil {
		fail("denied", errcode.ErrorCodeUnauthorized.WithMessage("blob URL "+err.Error()+"; fetch the blob's torrent again for a fresh "+BlobURLHeader))
		return
	}
	size, err := s.drv.BlobSize(r.Context(), dgst)
	if err != nil {
		if driver.IsNotFound(err) {
			fail("unknown", v2.ErrorCodeBlobUnknown.WithDetail(dgst))
			return
		}
		s.log.WithError(err).WithField("digest", dgst).Error("piece range: stat blob")
		fail("error", errcode.ErrorCodeUnknown.WithDetail(err.Error()))
		return
	}

	start, n, status := int64(0), size, http.StatusOK
	if ranges := r.Header.Values("Range"); len(ranges) > 0 {
		var ok bool
		start, n, ok = httprange.Parse(ranges, size)
		if !ok {
			w.Header().Set("Content-Range", "bytes */"+strconv.FormatInt(size, 10))
			fail("bad_range", errcode.ErrorCodeRangeInvalid.WithMessage("a single satisfiable range, bytes=first-last, is required"))
			return
		}
		status = http.StatusPartialContent
	}

	// A node's share fetch of a range another node fetched a moment ago
	// is refused: the block is on its way through the swarm (regshare).
	share := r.Method == http.MethodGet && status == http.StatusPartialContent && r.Header.Get(regshare.Header) != ""
	if share && !s.shares.take(dgst, start, r.RemoteAddr) {
		fail("taken", errorCodeShareTaken)
		return
	}

	var body io.ReadCloser
	if r.Method == http.MethodGet && n > 0 {
		// Opened before any header is written, so a blob deleted since the
		// stat still gets a proper error.
		body, err = s.drv.BlobReader(r.Context(), dgst, start)
		if err != nil {
			if driver.IsNotFound(err) {
				fail("unknown", v2.ErrorCodeBlobUnknown.WithDetail(dgst))
				return
			}
			s.log.WithError(err).WithField("digest", dgst).Error("piece range: open blob")
			fail("error", errcode.ErrorCodeUnknown.WithDetail(err.Error()))
			return
		}
		defer body.Close()
	}

	if body != nil && status == http.StatusPartialContent {
		// Ranges (nodes' pieces) take turns; a whole blob (a plain pull
		// through a signed URL) does not wait behind them.
		done, ok := s.sendTurn(r.Context())
		if !ok {
			return
		}
		defer done()
	}

	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Content-Length", strconv.FormatInt(n, 10))
	h.Set("Docker-Content-Digest", dgst.String())
	h.Set("Accept-Ranges", "bytes")
	h.Set("Etag", `"`+dgst.String()+`"`)
	// The URL carries a short-lived authorization: no shared cache may keep
	// serving it after the token expires.
	h.Set("Cache-Control", "no-store")
	if status == http.StatusPartialContent {
		h.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+strconv.FormatInt(start+n-1, 10)+"/"+strconv.FormatInt(size, 10))
	}
	s.metrics.pieces.WithLabelValues("ok").Inc()
	w.WriteHeader(status)
	if body == nil {
		return
	}
	reader := "stream"
	if _, ok := body.(*os.File); ok {
		reader = "file"
	}
	// io.Copy hands the LimitedReader to the ResponseWriter's ReadFrom,
	// which for an *os.File over a plain TCP connection is sendfile(2).
	sent, err := io.Copy(w, io.LimitReader(body, n))
	s.metrics.pieceBytes.WithLabelValues(reader).Add(float64(sent))
	if err == nil && sent < n {
		err = io.ErrUnexpectedEOF
	}
	if err != nil && share {
		s.shares.forget(dgst, start, r.RemoteAddr)
	}
	if err != nil && r.Context().Err() == nil {
		// Headers are out; net/http closes the connection on the short body.
		s.log.WithError(err).WithField("digest", dgst).WithField("sent", sent).Warn("piece range: copy")
	}
}
