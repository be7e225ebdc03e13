package agent

import (
	"context"

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
	_, strict := a.dl.strict.Load(d.req.hex)
	cfg := swarm.Config{
		Layout:       swarm.Layout{Length: info.Length, PieceLength: info.PieceLength, Hashes: info.Pieces},
		StallTimeout: a.cfg.P2P.StallTimeout,
		Deadline:     a.cfg.P2P.Deadline,
		AssumedRate:  assumedRate(a.cfg.P2P.DownloadBytesPerSec),
		Strict:       strict,
	}
	reg := a.origin.Range(d.f, info.Length, d.dataURL, log)
	e := swarm.New(cfg, swarm.Deps{Blob: d.blob, Peers: sw, Origin: reg, Metrics: swarmMetrics{a.metrics, d.prog}, Log: log, Throttle: a.waitHTTP, Wants: d.f.Wants})
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

// swarmMetrics is the engine's view of the agent's metrics.
type swarmMetrics struct {
	m    *agentMetrics
	prog *flightProgress
}

func (s swarmMetrics) PeerBytes(received, useful int) {
	s.prog.fromPeers.Add(int64(useful))
	s.m.swarm.WithLabelValues("all").Add(float64(received))
	s.m.swarm.WithLabelValues("useful").Add(float64(useful))
}

func (s swarmMetrics) RegistryBytes(why string, n int) {
	s.prog.fromRegistry.Add(int64(n))
	s.m.origin.WithLabelValues(why).Add(float64(n))
}

func (s swarmMetrics) Fallback(reason string) { s.m.fallbacks.WithLabelValues(reason).Inc() }
