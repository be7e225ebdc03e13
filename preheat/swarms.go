package preheat

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/httpx"
)

// swarmClient reads the tracker's swarm listing (GET /api/v1/swarms) for
// the console. The tracker knows swarms only by infohash, so that is what
// the console shows, with live peers per class.
type swarmClient struct {
	base   string
	token  string
	client *http.Client
	log    *logrus.Entry
}

// TrackerSwarm is one swarm as the tracker lists it.
type TrackerSwarm struct {
	InfoHash   string `json:"infoHash"`
	Complete   int    `json:"complete"`
	Origin     int    `json:"origin"`
	Incomplete int    `json:"incomplete"`
	Downloaded int    `json:"downloaded"`
}

// SwarmsView is the body of /console/api/swarms.
type SwarmsView struct {
	// Configured is false when preheat has no tracker.url; the console
	// then says so instead of showing an empty list as if it were true.
	Configured bool           `json:"configured"`
	Swarms     []TrackerSwarm `json:"swarms"`
	Limit      int            `json:"limit,omitempty"`
}

// maxSwarmListBytes bounds what is read of the tracker's answer: the
// tracker caps the list, but preheat should not trust a misconfigured URL
// to do so.
const maxSwarmListBytes = 4 << 20

func (c *swarmClient) list(ctx context.Context) (SwarmsView, error) {
	out := SwarmsView{Configured: true}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.base+"/api/v1/swarms", nil)
	if err != nil {
		return out, fmt.Errorf("tracker swarm listing: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.client.Do(req)
	if err != nil {
		return out, fmt.Errorf("tracker swarm listing: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxSwarmListBytes+1))
	if err != nil {
		return out, fmt.Errorf("tracker swarm listing: read: %w", err)
	}
	if len(body) > maxSwarmListBytes {
		return out, fmt.Errorf("tracker swarm listing: answer over %d bytes", maxSwarmListBytes)
	}
	if resp.StatusCode != http.StatusOK {
		// The tracker's own words go to the log only: an answer of
		// preheat's never carries an upstream's body.
		var e struct {
			Error string `json:"error"`
		}
		_ = json.Unmarshal(body, &e)
		c.log.WithFields(logrus.Fields{"status": resp.StatusCode, "trackerError": e.Error}).Debug("tracker refused the swarm listing")
		return out, fmt.Errorf("tracker swarm listing: %d %s", resp.StatusCode, http.StatusText(resp.StatusCode))
	}
	if err := json.Unmarshal(body, &out); err != nil {
		return out, fmt.Errorf("tracker swarm listing: bad answer: %w", err)
	}
	out.Configured = true
	if out.Swarms == nil {
		out.Swarms = []TrackerSwarm{}
	}
	return out, nil
}

func (s *Service) handleSwarms(w http.ResponseWriter, r *http.Request) {
	if s.up.swarms == nil {
		httpx.WriteJSON(w, http.StatusOK, SwarmsView{Swarms: []TrackerSwarm{}})
		return
	}
	v, err := s.up.swarms.list(r.Context())
	if err != nil {
		s.log.WithError(err).Warn("cannot list swarms")
		httpx.WriteError(w, http.StatusBadGateway, "", err.Error())
		return
	}
	httpx.WriteJSON(w, http.StatusOK, v)
}
