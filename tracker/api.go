package tracker

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/httpx"
)

// The read API: what an operator's console needs to show swarms. It is
// JSON (not bencode) and answers errors in the house shape
// {"error": "...", "code": "..."} (httpx.WriteError).

// CodeUnsupported answers a listing over a store that cannot list swarms
// (a Store that is not a Lister).
const CodeUnsupported = "UNSUPPORTED"

// SwarmView is one swarm as GET /api/v1/swarms returns it.
type SwarmView struct {
	InfoHash   string `json:"infoHash"`
	Complete   int    `json:"complete"`
	Origin     int    `json:"origin"`
	Incomplete int    `json:"incomplete"`
	Downloaded int    `json:"downloaded"`
}

// SwarmList is the body of GET /api/v1/swarms.
type SwarmList struct {
	Swarms []SwarmView `json:"swarms"`
	// Limit is the cap that applied; a list this long may have been cut.
	Limit int `json:"limit"`
}

// apiAuthorized compares the bearer token with every configured one in
// constant time, so timing does not reveal how much of a guess matched.
func (s *Server) apiAuthorized(r *http.Request) bool {
	got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || got == "" {
		return false
	}
	match := 0
	for _, t := range s.apiTokens {
		match |= subtle.ConstantTimeCompare([]byte(got), []byte(t))
	}
	return match == 1
}

func (s *Server) handleSwarms(w http.ResponseWriter, r *http.Request) {
	if len(s.apiTokens) == 0 {
		httpx.WriteError(w, http.StatusNotFound, httpx.CodeNotFound, "the swarm listing is off: set apiTokens in the tracker config")
		return
	}
	if !s.apiAuthorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="shoal-tracker"`)
		httpx.WriteError(w, http.StatusUnauthorized, httpx.CodeUnauthorized, "send one of the tracker's apiTokens as a bearer token")
		return
	}
	limit := s.cfg.MaxSwarms
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.cfg.MaxSwarms {
			httpx.WriteError(w, http.StatusBadRequest, httpx.CodeInvalid, "limit must be an integer from 1 to "+strconv.Itoa(s.cfg.MaxSwarms))
			return
		}
		limit = n
	}
	lister, ok := s.store.(Lister)
	if !ok {
		httpx.WriteError(w, http.StatusNotImplemented, CodeUnsupported, "this peer store cannot list swarms")
		return
	}
	// Listing reads more than an announce; give it a few times as long.
	ctx, cancel := context.WithTimeout(r.Context(), 4*s.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	all, err := lister.Swarms(ctx, s.now(), limit)
	s.metrics.observeStore("swarms", time.Since(start), err)
	if err != nil {
		status, code := http.StatusInternalServerError, httpx.CodeInternal
		if errors.Is(err, ErrStoreUnavailable) || errors.Is(err, context.DeadlineExceeded) {
			status, code = http.StatusServiceUnavailable, httpx.CodeUnavailable
		}
		s.log.WithError(err).Warn("swarm listing failed")
		httpx.WriteError(w, status, code, "peer store: "+err.Error())
		return
	}
	out := SwarmList{Swarms: make([]SwarmView, 0, len(all)), Limit: limit}
	for _, sw := range all {
		out.Swarms = append(out.Swarms, SwarmView{InfoHash: hex.EncodeToString(sw.InfoHash[:]),
			Complete: sw.Complete, Origin: sw.Origin, Incomplete: sw.Incomplete, Downloaded: sw.Downloaded})
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, http.StatusOK, out)
}
