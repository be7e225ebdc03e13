package registry

import (
	"context"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// delivery: inline. A front end that authorizes every /v2/ request itself
// and forwards no path it does not know — Harbor's core refuses any /v2/
// path outside the OCI routes ("un-recognized request") and any blob GET
// without the client's Authorization — would refuse the signed metadata
// URL a redirect points to, since nodes follow it without credentials. So
// the metadata is written into the answer to the node's own blob GET, the
// request the front end has just authorized, and distribution then too
// (its auth, its blob lookup: the same decision a redirect carries). No
// piece-range URL goes with it: it would be refused for the same reason,
// and nodes take the registry's share of a blob through the blob route
// with their own credentials.

// inlineKey marks a torrent request whose answer is written in place of
// the redirect distribution would send.
type inlineKey struct{}

// inlineSlot is filled by TorrentURL when distribution, having authorized
// the request and found the blob, asks the p2p middleware for its redirect.
type inlineSlot struct {
	repo string
	dgst digest.Digest
	set  bool
}

// inlineTorrent prepares a torrent request for an inline answer.
func (s *Server) inlineTorrent(w http.ResponseWriter, r *http.Request) (http.ResponseWriter, *http.Request) {
	slot := &inlineSlot{}
	r = r.WithContext(context.WithValue(r.Context(), inlineKey{}, slot))
	return &inlineWriter{ResponseWriter: w, s: s, r: r, slot: slot}, r
}

// inlineWriter turns distribution's redirect to the metadata into the
// metadata itself; every other answer (401, 404, a plain blob when the
// request went elsewhere) passes unchanged.
type inlineWriter struct {
	http.ResponseWriter
	s       *Server
	r       *http.Request
	slot    *inlineSlot
	written bool // the torrent was written; distribution's body is dropped
}

func (w *inlineWriter) WriteHeader(code int) {
	if w.written {
		return
	}
	if code == http.StatusTemporaryRedirect && w.slot.set {
		w.written = true
		h := w.ResponseWriter.Header()
		h.Del("Location")
		h.Del("Content-Type")
		w.s.writeTorrent(w.ResponseWriter, w.r, w.slot.repo, w.slot.dgst, "")
		return
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *inlineWriter) Write(b []byte) (int, error) {
	if w.written {
		return len(b), nil
	}
	return w.ResponseWriter.Write(b)
}

// Unwrap lets http.ResponseController reach the connection.
func (w *inlineWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
