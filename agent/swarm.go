package agent

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync/atomic"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/swarm"
)

// runSwarm downloads the blob through the swarm engine (agent/swarm): the
// torrent's swarm (peer.Swarm) for the nodes, the upstream (registryRange)
// for the registry's share.
func (d *dl) runSwarm(ctx context.Context, t *torrent.Torrent, info *metainfo.Info, log *logrus.Entry) (swarm.Result, error) {
	a := d.a
	sw, leave := a.p2p.Join(t, info.Length, info.NumPieces())
	defer leave()
	_, strict := a.strict.Load(d.req.hex)
	cfg := swarm.Config{
		Layout:       swarm.Layout{Length: info.Length, PieceLength: info.PieceLength, Hashes: info.Pieces},
		StallTimeout: a.cfg.P2P.StallTimeout,
		Deadline:     a.cfg.P2P.Deadline,
		AssumedRate:  assumedRate(a.cfg.P2P.DownloadBytesPerSec),
		Strict:       strict,
	}
	reg := &registryRange{d: d, length: info.Length, log: log}
	if d.dataURL != "" {
		reg.dataURL.Store(&d.dataURL)
	}
	e := swarm.New(cfg, swarm.Deps{Blob: d.blob, Peers: sw, Origin: reg, Metrics: swarmMetrics{a.metrics}, Log: log, Throttle: a.waitHTTP})
	res, err := e.Run(ctx)
	d.fromPeers.Add(res.FromPeers)
	d.fromRegistry.Add(res.FromRegistry)
	return res, err
}

// assumedRate is the download rate the stall bound assumes before a blob
// shows its own: swarm's default, or the node's download limit if lower.
func assumedRate(limit int64) float64 {
	if limit > 0 && limit < swarm.DefaultAssumedRate {
		return float64(limit)
	}
	return swarm.DefaultAssumedRate
}

// registryRange is the engine's Origin: Range requests to the registry's
// signed piece endpoint while it takes them, then to the blob route with
// the flight's current credentials. The engine never sees either.
type registryRange struct {
	d      *dl
	length int64
	log    *logrus.Entry
	// dataURL is the registry's piece endpoint for this blob (nil: use the
	// blob route); the first refusal drops it.
	dataURL atomic.Pointer[string]
}

func (o *registryRange) ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error) {
	if u := o.dataURL.Load(); u != nil {
		body, err := o.get(ctx, *u, "", off, n)
		var se *swarm.StatusError
		if !errors.As(err, &se) || se.Status < 400 || se.Status >= 500 {
			return body, err
		}
		// Refused (the signed URL expired, or the registry no longer
		// serves it): the blob route with the client's credentials.
		o.dataURL.CompareAndSwap(u, nil)
		o.log.WithField("status", se.Status).Debug("registry's piece endpoint refused; using the blob route")
	}
	d := o.d
	c := d.f.credential()
	body, err := o.get(ctx, blobURL(d.req.base, c.repo, d.req.hex), c.auth, off, n)
	var se *swarm.StatusError
	if errors.As(err, &se) && (se.Status == http.StatusUnauthorized || se.Status == http.StatusForbidden) {
		// Expired or never valid: the next attempt uses another
		// requester's credentials if one has some.
		d.a.switchCred(d.f, c, false)
	}
	return body, err
}

func (o *registryRange) get(ctx context.Context, target, auth string, off, n int64) (io.ReadCloser, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := o.d.a.plain.Do(req)
	if err != nil {
		// Not the *url.Error itself: the registry's signed URL carries a
		// token, and errors end up in logs.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("from %s: %w", req.URL.Host, err)
	}
	return swarm.RangeBody(resp, off, n, o.length)
}

// swarmMetrics is the engine's view of the agent's metrics.
type swarmMetrics struct{ m *agentMetrics }

func (s swarmMetrics) PeerBytes(received, useful int) {
	s.m.swarm.WithLabelValues("all").Add(float64(received))
	s.m.swarm.WithLabelValues("useful").Add(float64(useful))
}

func (s swarmMetrics) RegistryBytes(why string, n int) {
	s.m.origin.WithLabelValues(why).Add(float64(n))
}

func (s swarmMetrics) Fallback(reason string) { s.m.fallbacks.WithLabelValues(reason).Inc() }
