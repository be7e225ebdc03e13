package tracker

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/tracker"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/announce"
	"github.com/shoalproject/shoal/internal/httpx"
)

// announceQuery is a parsed announce. Parsing is ours rather than
// anacrolix's httpTrackerServer.Handler because that handler answers bad
// input with plain-text HTTP errors, ignores numwant and compact=0, and has
// no place for the token and group parameters.
type announceQuery struct {
	infoHash [20]byte
	peerID   [20]byte
	port     uint16
	left     int64 // -1 when unknown
	event    tracker.AnnounceEvent
	numwant  int
	compact  bool
	group    string
	token    string
}

// badRequest is a client error; its text becomes the failure reason.
type badRequest string

func (e badRequest) Error() string { return string(e) }

func parseID(vs url.Values, key string) ([20]byte, error) {
	var id [20]byte
	v, ok := vs[key]
	if !ok || len(v) != 1 {
		return id, badRequest(key + " missing or repeated")
	}
	if len(v[0]) != 20 {
		return id, badRequest(fmt.Sprintf("%s must be 20 bytes, got %d", key, len(v[0])))
	}
	copy(id[:], v[0])
	return id, nil
}

// optInt parses an optional integer parameter.
func optInt(vs url.Values, key string, def int64) (int64, error) {
	v := vs.Get(key)
	if v == "" {
		return def, nil
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, badRequest("invalid " + key)
	}
	return n, nil
}

// parseAnnounce validates an announce query string; defNumwant and
// maxNumwant come from the config.
func parseAnnounce(rawQuery string, defNumwant, maxNumwant int) (q announceQuery, err error) {
	vs, err := url.ParseQuery(rawQuery)
	if err != nil {
		return q, badRequest("malformed query string")
	}
	if q.infoHash, err = parseID(vs, "info_hash"); err != nil {
		return q, err
	}
	if q.peerID, err = parseID(vs, "peer_id"); err != nil {
		return q, err
	}
	port, err := strconv.ParseUint(vs.Get("port"), 10, 16)
	if err != nil || port == 0 {
		return q, badRequest("invalid port")
	}
	q.port = uint16(port)
	if q.left, err = optInt(vs, "left", -1); err != nil {
		return q, err
	}
	for _, k := range []string{"uploaded", "downloaded"} {
		if n, err := optInt(vs, k, 0); err != nil || n < 0 {
			return q, badRequest("invalid " + k)
		}
	}
	if err := q.event.UnmarshalText([]byte(vs.Get("event"))); err != nil {
		return q, badRequest("unknown event")
	}
	nw, err := optInt(vs, "numwant", -1)
	if err != nil {
		return q, err
	}
	switch {
	case nw < 0:
		q.numwant = defNumwant
	case nw > int64(maxNumwant):
		q.numwant = maxNumwant
	default:
		q.numwant = int(nw)
	}
	q.compact = vs.Get("compact") != "0"
	q.group = vs.Get("group")
	if len(q.group) > maxGroupLen {
		return q, badRequest(fmt.Sprintf("group longer than %d bytes", maxGroupLen))
	}
	q.token = vs.Get("token")
	return q, nil
}

type failureResponse struct {
	Reason string `bencode:"failure reason"`
}

// writeBencode answers 200 like every BitTorrent tracker: clients read the
// failure reason from the body and many ignore it on other statuses.
func writeBencode(w http.ResponseWriter, v any) error {
	b, err := bencode.Marshal(v)
	if err != nil {
		return fmt.Errorf("bencode response: %w", err)
	}
	w.Header().Set("Content-Type", "text/plain")
	w.Header().Set("Cache-Control", "no-store")
	_, err = w.Write(b)
	return err
}

func writeFailure(w http.ResponseWriter, reason string) {
	_ = writeBencode(w, failureResponse{Reason: reason})
}

// recoverPanics turns a panic in any handler into an answer in the route's
// own shape (a failure reason on the BitTorrent routes, the JSON error
// elsewhere), so a bug costs one request, not the process or a confusing
// reset.
func recoverPanics(log *logrus.Entry, next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if v := recover(); v != nil {
				if v == http.ErrAbortHandler {
					panic(v)
				}
				log.WithField("panic", v).WithField("path", r.URL.Path).Error("handler panicked")
				switch r.URL.Path {
				case "/announce", "/scrape":
					writeFailure(w, "internal tracker error")
				default:
					httpx.WriteError(w, http.StatusInternalServerError, httpx.CodeInternal, "internal tracker error")
				}
			}
		}()
		next.ServeHTTP(w, r)
	})
}

// nonCompactPeer is BEP 3's dictionary peer. httpTracker.Peer cannot be used
// to send it: its net.IP field bencodes as raw bytes, not the text address
// clients parse.
type nonCompactPeer struct {
	ID   string `bencode:"peer id"`
	IP   string `bencode:"ip"`
	Port int    `bencode:"port"`
}

// appendCompact appends a peer's address bytes then its big-endian port.
func appendCompact(b []byte, ap netip.AddrPort) []byte {
	if a := ap.Addr(); a.Is4() {
		ip := a.As4()
		b = append(b, ip[:]...)
	} else {
		ip := a.As16()
		b = append(b, ip[:]...)
	}
	return append(b, byte(ap.Port()>>8), byte(ap.Port()))
}

type nonCompactResponse struct {
	Interval    int32            `bencode:"interval"`
	MinInterval int32            `bencode:"min interval"`
	Complete    int32            `bencode:"complete"`
	Incomplete  int32            `bencode:"incomplete"`
	Peers       []nonCompactPeer `bencode:"peers"`
}

func (s *Server) handleAnnounce(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	defer func() { s.metrics.announceTime.Observe(time.Since(start).Seconds()) }()
	q, err := parseAnnounce(r.URL.RawQuery, s.cfg.DefaultNumwant, s.cfg.MaxNumwant)
	if err != nil {
		s.metrics.failBadRequest.Inc()
		writeFailure(w, err.Error())
		return
	}
	origin, err := s.authorize(q.infoHash, q.token)
	if err != nil {
		s.metrics.failToken.Inc()
		writeFailure(w, "announce not authorized: "+err.Error())
		return
	}
	ip, err := s.requestIP(r)
	if err != nil {
		s.metrics.failBadRequest.Inc()
		writeFailure(w, "cannot determine peer address")
		return
	}
	peer := Peer{ID: q.peerID, Addr: netip.AddrPortFrom(ip, q.port), Group: q.group, Class: ClassIncomplete}
	switch {
	case origin:
		peer.Class = ClassOrigin
	case q.left == 0 || q.event == tracker.Completed:
		peer.Class = ClassComplete
	}
	if !origin && s.members != nil {
		member, err := s.members.Verify(r.Header, r.URL.RawQuery, s.now())
		switch {
		case err == nil:
			peer.Member = member
		case errors.Is(err, announce.ErrUnsigned) && s.cfg.AllowUnsigned:
			peer.Class = ClassUnverified
		default:
			s.log.WithError(err).WithField("member", r.Header.Get(announce.HeaderMember)).Debug("announce signature refused")
			s.metrics.rejectedSignatures.WithLabelValues(signatureReason(err)).Inc()
			s.metrics.failSignature.Inc()
			writeFailure(w, "announce not signed by a member of this cluster: "+err.Error())
			return
		}
	}
	in := AnnounceInput{
		InfoHash:  q.infoHash,
		Peer:      peer,
		Stopped:   q.event == tracker.Stopped,
		Completed: q.event == tracker.Completed && !origin,
		TTL:       s.cfg.PeerTTL,
	}
	if !in.Stopped {
		in.Sample = q.numwant
		if peer.Group != "" {
			// Oversample so same-group peers can be found beyond the first
			// numwant random picks. Locality is exact for swarms up to this
			// size and best effort (a random 4x sample) above it.
			in.Sample *= 4
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	storeStart := time.Now()
	sw, err := s.store.Announce(ctx, s.now(), in)
	s.metrics.observeStore("announce", time.Since(storeStart), err)
	if err != nil {
		s.metrics.failStore.Inc()
		s.log.WithError(err).WithField("info_hash", fmt.Sprintf("%x", q.infoHash)).Warn("announce failed")
		reason := "tracker temporarily unavailable, retry later"
		if !errors.Is(err, ErrStoreUnavailable) && !errors.Is(err, context.DeadlineExceeded) {
			reason = "internal tracker error"
		}
		writeFailure(w, reason)
		return
	}
	var sel []Peer
	if !in.Stopped {
		rng, _ := s.rngs.Get().(*rand.Rand)
		if rng == nil {
			rng = newRand()
		}
		sel = selectPeers(sw.Candidates, handOut{
			selfID: peer.ID, selfAddr: peer.Addr, group: peer.Group, limit: q.numwant,
			young: youngSwarm(sw, s.cfg.YoungSwarmSeeders), maxPerIP: s.cfg.MaxPeersPerIP,
			rng: rng,
		})
		s.rngs.Put(rng)
	}
	s.metrics.announceEvent(q.event).Inc()
	s.metrics.swarmSize.Observe(float64(sw.Complete + sw.Incomplete))
	s.metrics.handedOut.Observe(float64(len(sel)))
	interval := int32(s.cfg.Interval / time.Second)
	if !q.compact {
		resp := nonCompactResponse{
			Interval: interval, MinInterval: interval,
			Complete: int32(sw.Complete), Incomplete: int32(sw.Incomplete),
			Peers: []nonCompactPeer{},
		}
		for _, p := range sel {
			resp.Peers = append(resp.Peers, nonCompactPeer{ID: string(p.ID[:]), IP: p.Addr.Addr().String(), Port: int(p.Addr.Port())})
		}
		if err := writeBencode(w, resp); err != nil {
			s.log.WithError(err).Debug("write announce response")
		}
		return
	}
	writeCompact(w, interval, sw.Counts, sel)
}

// writeCompact writes the BEP 23 answer (with BEP 7's peers6) by hand: it
// is the one answer every announce gets, and a reflective encoder spends
// more than the rest of the handler on it. Keys in sorted order, as
// bencode requires.
func writeCompact(w http.ResponseWriter, interval int32, c Counts, peers []Peer) {
	var p4, p6 int
	for _, p := range peers {
		if p.Addr.Addr().Is4() {
			p4++
		} else {
			p6++
		}
	}
	b := make([]byte, 0, 96+6*p4+18*p6)
	b = append(b, "d8:completei"...)
	b = strconv.AppendInt(b, int64(c.Complete), 10)
	b = append(b, "e10:incompletei"...)
	b = strconv.AppendInt(b, int64(c.Incomplete), 10)
	b = append(b, "e8:intervali"...)
	b = strconv.AppendInt(b, int64(interval), 10)
	b = append(b, "e12:min intervali"...)
	b = strconv.AppendInt(b, int64(interval), 10)
	b = append(b, "e5:peers"...)
	b = strconv.AppendInt(b, int64(6*p4), 10)
	b = append(b, ':')
	for _, p := range peers {
		if p.Addr.Addr().Is4() {
			b = appendCompact(b, p.Addr)
		}
	}
	if p6 > 0 {
		b = append(b, "6:peers6"...)
		b = strconv.AppendInt(b, int64(18*p6), 10)
		b = append(b, ':')
		for _, p := range peers {
			if !p.Addr.Addr().Is4() {
				b = appendCompact(b, p.Addr)
			}
		}
	}
	b = append(b, 'e')
	h := w.Header()
	h["Content-Type"] = textPlain
	h["Cache-Control"] = noStore
	_, _ = w.Write(b)
}

var (
	textPlain = []string{"text/plain"}
	noStore   = []string{"no-store"}
)

// youngSwarm: fewer complete peers than threshold, the origin not counted.
func youngSwarm(sw Swarm, threshold int) bool {
	origins := 0
	for _, p := range sw.Candidates {
		if p.Class == ClassOrigin {
			origins++
		}
	}
	return sw.Complete-origins < threshold
}

func signatureReason(err error) string {
	switch {
	case errors.Is(err, announce.ErrUnsigned):
		return "missing"
	case errors.Is(err, announce.ErrMalformed):
		return "malformed"
	case errors.Is(err, announce.ErrStale):
		return "stale"
	}
	return "invalid"
}

func eventLabel(e tracker.AnnounceEvent) string {
	if e == tracker.None {
		return "none"
	}
	return e.String()
}

type scrapeResponse struct {
	Files map[string]scrapeFile `bencode:"files"`
}

type scrapeFile struct {
	Complete   int32 `bencode:"complete"`
	Downloaded int32 `bencode:"downloaded"`
	Incomplete int32 `bencode:"incomplete"`
}

// handleScrape serves BEP 48. Every infohash asked for must be covered by
// a token, so scrape leaks nothing announce would not. Tokens pair with
// infohashes by position (the i-th token covers the i-th info_hash), so a
// request costs one token verification per infohash: trying every token
// against every infohash let one request with many tokens cost thousands
// of HMACs (issue 22).
func (s *Server) handleScrape(w http.ResponseWriter, r *http.Request) {
	vs, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		s.metrics.failBadRequest.Inc()
		writeFailure(w, "malformed query string")
		return
	}
	raw := vs["info_hash"]
	if len(raw) == 0 || len(raw) > s.cfg.MaxScrape {
		s.metrics.failBadRequest.Inc()
		writeFailure(w, fmt.Sprintf("scrape wants 1 to %d info_hash parameters", s.cfg.MaxScrape))
		return
	}
	tokens := vs["token"]
	if len(tokens) == 0 {
		tokens = make([]string, len(raw)) // each reported as a missing token below
	}
	if len(tokens) != len(raw) {
		s.metrics.failBadRequest.Inc()
		writeFailure(w, fmt.Sprintf("scrape wants one token per info_hash, in the same order: got %d tokens for %d info_hash parameters", len(tokens), len(raw)))
		return
	}
	ihs := make([][20]byte, 0, len(raw))
	for i, v := range raw {
		if len(v) != 20 {
			s.metrics.failBadRequest.Inc()
			writeFailure(w, "info_hash must be 20 bytes")
			return
		}
		var h [20]byte
		copy(h[:], v)
		if _, err := s.authorize(h, tokens[i]); err != nil {
			s.metrics.failToken.Inc()
			writeFailure(w, "scrape not authorized: "+err.Error())
			return
		}
		ihs = append(ihs, h)
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	res, err := s.scrape(ctx, ihs)
	if err != nil {
		s.metrics.failStore.Inc()
		s.log.WithError(err).Warn("scrape failed")
		writeFailure(w, "tracker temporarily unavailable, retry later")
		return
	}
	s.metrics.scrapes.Inc()
	resp := scrapeResponse{Files: make(map[string]scrapeFile, len(ihs))}
	for i, h := range ihs {
		resp.Files[string(h[:])] = scrapeFile{Complete: int32(res[i].Complete), Downloaded: int32(res[i].Downloaded), Incomplete: int32(res[i].Incomplete)}
	}
	if err := writeBencode(w, resp); err != nil {
		s.log.WithError(err).Debug("write scrape response")
	}
}
