package tracker

import (
	"context"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// The read API: what an operator's console needs to show swarms. It is
// JSON (not bencode) and answers errors in the one shape {"error": "..."}.

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

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeJSONError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"error": msg})
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
		writeJSONError(w, http.StatusNotFound, "the swarm listing is off: set api_tokens in the tracker config")
		return
	}
	if !s.apiAuthorized(r) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="shoal-tracker"`)
		writeJSONError(w, http.StatusUnauthorized, "send one of the tracker's api_tokens as a bearer token")
		return
	}
	limit := s.cfg.MaxSwarms
	if v := r.URL.Query().Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > s.cfg.MaxSwarms {
			writeJSONError(w, http.StatusBadRequest, "limit must be an integer from 1 to "+strconv.Itoa(s.cfg.MaxSwarms))
			return
		}
		limit = n
	}
	lister, ok := s.store.(Lister)
	if !ok {
		writeJSONError(w, http.StatusNotImplemented, "this peer store cannot list swarms")
		return
	}
	// Listing reads more than an announce; give it a few times as long.
	ctx, cancel := context.WithTimeout(r.Context(), 4*s.cfg.RequestTimeout)
	defer cancel()
	start := time.Now()
	all, err := lister.Swarms(ctx, s.now(), limit)
	s.metrics.observeStore("swarms", time.Since(start), err)
	if err != nil {
		status := http.StatusInternalServerError
		if errors.Is(err, ErrStoreUnavailable) {
			status = http.StatusServiceUnavailable
		}
		s.log.WithError(err).Warn("swarm listing failed")
		writeJSONError(w, status, "peer store: "+err.Error())
		return
	}
	out := SwarmList{Swarms: make([]SwarmView, 0, len(all)), Limit: limit}
	for _, sw := range all {
		out.Swarms = append(out.Swarms, SwarmView{InfoHash: hex.EncodeToString(sw.InfoHash[:]),
			Complete: sw.Complete, Origin: sw.Origin, Incomplete: sw.Incomplete, Downloaded: sw.Downloaded})
	}
	writeJSON(w, http.StatusOK, out)
}
