// Package traffic keeps registry egress against bytes between nodes, per
// minute and summed over every node, from the byte counters each agent
// sends with its heartbeat: the console's chart.
package traffic

import (
	"context"
	"time"
)

// NodeTraffic is one heartbeat's byte counters. They count from the agent
// process's start (StartedAt), so a restart resets them.
type NodeTraffic struct {
	StartedAt    time.Time
	FromRegistry int64
	FromPeers    int64
	// Fresh says the agent started recently enough that everything it
	// counted is new; otherwise a node seen for the first time (preheat
	// restarted, counters expired) only sets the baseline, instead of
	// dumping its whole history into the current minute.
	Fresh bool
}

// Point is the bytes nodes fetched in one minute.
type Point struct {
	Minute       time.Time `json:"minute"`
	FromRegistry int64     `json:"fromRegistry"`
	FromPeers    int64     `json:"fromPeers"`
}

// Store keeps registry egress vs bytes between nodes per minute,
// summed over every node, so any replica draws the same chart.
type Store interface {
	// RecordTraffic adds what the node fetched since its previous report
	// to the minute of at; buckets and baselines are kept for keep.
	RecordTraffic(ctx context.Context, nodeID string, t NodeTraffic, at time.Time, keep time.Duration) error
	// Traffic returns the minutes since since that saw traffic, oldest first.
	Traffic(ctx context.Context, since time.Time) ([]Point, error)
}

// Freshness: an agent that started this recently when preheat
// first hears of it has all its counted bytes fetched "now".
const Freshness = 2 * time.Minute

// Delta is what a report adds, given the previous one of the node
// (prevStart "" when there is none). Counters that went down without a
// new start (they never should) add nothing rather than a negative.
func Delta(prevStart string, prevReg, prevPeers int64, cur NodeTraffic) (reg, peers int64) {
	start := cur.StartedAt.UTC().Format(time.RFC3339Nano)
	switch {
	case prevStart == start:
		reg, peers = cur.FromRegistry-prevReg, cur.FromPeers-prevPeers
		if reg < 0 || peers < 0 {
			return 0, 0
		}
		return reg, peers
	case cur.Fresh:
		return cur.FromRegistry, cur.FromPeers
	}
	return 0, 0
}
