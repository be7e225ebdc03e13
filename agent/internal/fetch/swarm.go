package fetch

import (
	"context"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoalproject/shoal/agent/swarm"
)

// runSwarm downloads the blob through the swarm engine (agent/swarm): the
// torrent's swarm (peer.Swarm) for the nodes, the upstream (origin.Range)
// for the registry's share.
func (d *dl) runSwarm(ctx context.Context, t *torrent.Torrent, info *metainfo.Info) (swarm.Result, error) {
	fe := d.fe
	sw, leave := fe.deps.Peers.Join(t, info.Length, info.NumPieces())
	defer leave()
	_, strict := fe.strict.Load(d.req.Hex)
	cfg := swarm.Config{
		Layout:       swarm.Layout{Length: info.Length, PieceLength: info.PieceLength, Hashes: info.Pieces},
		StallTimeout: fe.cfg.StallTimeout,
		Deadline:     fe.cfg.Deadline,
		AssumedRate:  assumedRate(fe.cfg.DownloadBytesPerSec),
		Strict:       strict,
	}
	reg := fe.deps.Origin.Range(d.f, info.Length, d.dataURL, d.log)
	e := swarm.New(cfg, swarm.Deps{Blob: d.blob, Peers: sw, Origin: reg, Metrics: d.prog, Log: d.log, Throttle: fe.waitHTTP, Wants: d.f.Wants})
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
