package preheat

// The console's data and the traffic chart's: the console itself (page,
// sessions, event stream) is preheat/console.

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/console"
	"github.com/shoalproject/shoal/preheat/traffic"
)

// openAccess reports whether the console may run without tokens for r,
// and why not. It goes by the address Serve's listener is bound to, not by
// the configured one: the caller may have handed Serve another listener.
func (s *Service) openAccess(r *http.Request) (bool, string) {
	addr := ""
	if p := s.listenAddr.Load(); p != nil {
		addr = *p
	}
	host, _, err := net.SplitHostPort(addr)
	if err != nil || !isLoopbackName(host) {
		return false, "preheat needs apiTokens when it listens beyond loopback (addr: " + addr + ")"
	}
	rh, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil || !isLoopbackName(rh) {
		return false, "without apiTokens preheat only answers loopback clients"
	}
	// A DNS-rebound name pointing at 127.0.0.1 must not reach an open
	// console: the browser would treat the page as that site's.
	hh := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		hh = h
	}
	if !isLoopbackName(hh) {
		return false, "without apiTokens preheat only answers requests for a loopback host (127.0.0.1, localhost, [::1])"
	}
	return true, ""
}

func isLoopbackName(h string) bool {
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(h, "[]"))
	return ip != nil && ip.IsLoopback()
}

// JobSummary is a job as the console's list shows it.
type JobSummary struct {
	ID        int64     `json:"id"`
	State     JobState  `json:"state"`
	Error     string    `json:"error,omitempty"`
	Image     string    `json:"image"`
	Groups    []string  `json:"groups,omitempty"`
	Source    string    `json:"source,omitempty"`
	Nodes     int       `json:"nodes"`
	Blobs     int       `json:"blobs"`
	CreatedAt time.Time `json:"createdAt"`
}

// Overview is what the console's nodes and jobs views draw.
type Overview struct {
	Nodes   []NodeView     `json:"nodes"`
	Jobs    []JobSummary   `json:"jobs"`
	Traffic []TrafficPoint `json:"traffic"`
	Replica string         `json:"replica"`
}

// consoleData is what the console shows (console.Data).
type consoleData struct{ s *Service }

func (d consoleData) Overview(ctx context.Context) (any, error) { return d.s.overview(ctx) }

func (d consoleData) Job(ctx context.Context, id int64) (any, error) {
	j, err := d.s.store.GetJob(ctx, id)
	if err != nil {
		return nil, err
	}
	return d.s.view(ctx, j)
}

// consoleRoutes serves the console (preheat/console) over this replica.
func (s *Service) consoleRoutes(r *mux.Router) {
	c := console.New(console.Deps{
		Tokens: s.cfg.APITokens, Open: s.openAccess, Data: consoleData{s}, NotFound: ErrNotFound,
		Retention: s.cfg.Retention, Decode: decode, Fail: s.writeError, Now: s.now, Log: s.log, Done: s.life.streamsDone,
	})
	c.Routes(r, console.API{
		Overview: s.handleOverview, Traffic: s.handleTraffic, Swarms: s.handleSwarms,
		Create: s.handleCreate("console"), Get: s.handleGet, Cancel: s.handleCancel,
	})
}

func (s *Service) overview(ctx context.Context) (*Overview, error) {
	nodes, err := s.store.ListNodes(ctx)
	if err != nil {
		return nil, err
	}
	jobs, err := s.store.ListJobs(ctx, 50)
	if err != nil {
		return nil, err
	}
	traffic, err := s.store.Traffic(ctx, s.now().Add(-console.TrafficWindow))
	if err != nil {
		return nil, err
	}
	now := s.now()
	out := &Overview{Nodes: []NodeView{}, Jobs: []JobSummary{}, Traffic: traffic, Replica: s.id}
	for _, n := range nodes {
		out.Nodes = append(out.Nodes, NodeView{Node: n, Alive: n.Alive(now)})
	}
	for _, j := range jobs {
		out.Jobs = append(out.Jobs, JobSummary{ID: j.ID, State: j.State, Error: j.Error, Image: j.Image, Groups: j.Groups,
			Source: j.Source, Nodes: len(j.Targets), Blobs: len(j.Blobs), CreatedAt: j.CreatedAt})
	}
	return out, nil
}

func (s *Service) handleOverview(w http.ResponseWriter, r *http.Request) {
	o, err := s.overview(r.Context())
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, o)
}

func (s *Service) handleTraffic(w http.ResponseWriter, r *http.Request) {
	since := s.now().Add(-console.TrafficWindow)
	if v := r.URL.Query().Get("minutes"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n <= 0 || n > 60*24*31 {
			httpx.WriteError(w, http.StatusBadRequest, "", "minutes must be an integer from 1 to 44640")
			return
		}
		since = s.now().Add(-time.Duration(n) * time.Minute)
	}
	pts, err := s.store.Traffic(r.Context(), since)
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]any{"traffic": pts})
}

// recordTraffic adds a heartbeat's byte counters to the per-minute
// totals. A failure loses a point of the chart, not the heartbeat.
func (s *Service) recordTraffic(ctx context.Context, hb nodeapi.Heartbeat) {
	if hb.StartedAt.IsZero() {
		return // an agent that does not report counters
	}
	now := s.now()
	t := NodeTraffic{StartedAt: hb.StartedAt, FromRegistry: hb.BytesFromRegistry, FromPeers: hb.BytesFromPeers,
		Fresh: now.Sub(hb.StartedAt) < traffic.Freshness}
	if err := s.store.RecordTraffic(ctx, hb.ID, t, now, max(s.cfg.Retention, console.TrafficWindow)); err != nil {
		s.log.WithError(err).WithField("node", hb.ID).Warn("cannot record node traffic")
	}
}
