// Package swarm is the download engine for one blob through a swarm of
// nodes: it asks sched.Plan what to fetch, fetches it from nodes (Peers) or
// the registry (Origin), checks and writes the pieces (Blob) and decides,
// on its clock, when the swarm has stalled.
//
// It is built from narrow interfaces so that it runs the same inside the
// agent (anacrolix membership, the data path, partial.Blob, the upstream's
// credentials behind Origin) and inside a simulator or a test (fakes and a
// fake clock, no processes): it never sees a torrent client, a socket or a
// credential.
package swarm

import (
	"context"
	"crypto/sha1"
	"io"
	"sync/atomic"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/jonboulle/clockwork"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/sched"
)

// Blob is where pieces go (partial.Blob in the agent).
type Blob interface {
	// AppendPresent appends the indexes of the pieces present.
	AppendPresent(dst []uint32) []uint32
	Complete() bool
	// Prefix is the length of the present prefix, for progress logs.
	Prefix() int64
	// WritePieceLent stores piece i (never over a present one) and calls
	// done once it no longer needs data. checked: its SHA-1 was checked
	// or its source is trusted.
	WritePieceLent(i int, data []byte, checked bool, done func()) error
}

// Peers is this blob's swarm as the engine needs it: who is connected and
// what they have, the registry claims among them, and the data path.
type Peers interface {
	// Self is this node's ID in the swarm.
	Self() string
	// Nodes are the connected nodes (the registry's seeder excluded), Data
	// set for those whose data path is known. Busy is left to the engine.
	Nodes() []sched.Peer
	// Formation says whether the tracker has answered (named anybody, the
	// registry's seeder included) and whether connections to the nodes it
	// named are still being made.
	Formation() (answered, forming bool)
	// Claimed are the pieces other connected nodes are fetching from the
	// registry now, leaving out the claims of the nodes ignore names (the
	// engine no longer asks them: their claims hold nothing back).
	Claimed(now time.Time, ignore func(id string) bool) *roaring.Bitmap
	// Claim tells the nodes this node fetches pieces from the registry;
	// Unclaim ends that (failed: they may fetch them themselves).
	Claim(pieces []int)
	Unclaim(pieces []int, failed bool)
	// Arrived says piece i is present here now (announce it).
	Arrived(i int)
	// Changed rings when something a plan depends on changed: a node
	// connected, a claim came, a node said where it serves.
	Changed() <-chan struct{}
	// ReadRange asks node id for bytes [off, off+n) of the blob. A node
	// with no upload slot free answers a *StatusError of 503.
	ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error)
}

// Origin is the registry, reached on the engine's behalf (credentials,
// signed URLs and their refusals are its business).
type Origin interface {
	// ReadRange returns bytes [off, off+n) of the blob.
	ReadRange(ctx context.Context, off, n int64) (io.ReadCloser, error)
}

// Metrics is what the engine reports.
type Metrics interface {
	// PeerBytes counts bytes received from nodes, and of them the useful
	// ones: they passed their check and were kept.
	PeerBytes(received, useful int)
	// RegistryBytes counts piece bytes from the registry, by why they
	// were planned (sched.Fetch.Why).
	RegistryBytes(why string, n int)
	// Fallback counts a departure from the plain swarm path by reason
	// (solo, idle_peer, bad_peer_data).
	Fallback(reason string)
}

// Layout is the blob as its torrent describes it.
type Layout struct {
	Length      int64
	PieceLength int64
	// Hashes are the pieces' SHA-1s, 20 bytes each, in order.
	Hashes []byte
}

// NumPieces is the number of pieces.
func (l Layout) NumPieces() int {
	if l.PieceLength <= 0 {
		return 0
	}
	return int((l.Length + l.PieceLength - 1) / l.PieceLength)
}

// Piece returns piece i's offset and length.
func (l Layout) Piece(i int) (off, n int64) {
	off = int64(i) * l.PieceLength
	return off, min(l.PieceLength, l.Length-off)
}

// Check reports whether data is piece i (its SHA-1).
func (l Layout) Check(i int, data []byte) bool {
	sum := sha1.Sum(data)
	return len(l.Hashes) >= 20*(i+1) && string(sum[:]) == string(l.Hashes[20*i:20*i+20])
}

// Config is one download's parameters.
type Config struct {
	Layout Layout
	// StallTimeout is the least stall bound (sched.StallBound's floor).
	StallTimeout time.Duration
	// Deadline bounds the whole swarm download.
	Deadline time.Duration
	// AssumedRate is the download rate (bytes/s) the stall bound assumes
	// before this blob showed its own; 0 is DefaultAssumedRate.
	AssumedRate float64
	// Strict: every piece from nodes is SHA-1-checked (the blob once
	// failed its digest here after unchecked pieces).
	Strict bool
	// Limits are the plan's knobs (zero: sched.DefaultLimits).
	Limits sched.Limits
}

// DefaultAssumedRate (1 MiB/s, 8 Mbit/s) is a link a node expects at the
// least: the stall bound of 1 MiB pieces stays at p2p.stallTimeout's
// default, that of 64 MiB pieces at sched.MaxStallBound.
const DefaultAssumedRate = 1 << 20

// Deps are the engine's parts.
type Deps struct {
	Blob    Blob
	Peers   Peers
	Origin  Origin
	Metrics Metrics         // nil: not counted
	Clock   clockwork.Clock // nil: the real one
	Log     *logrus.Entry   // nil: discarded
	// Throttle holds back n bytes of download (the node's download rate
	// limit); nil: unlimited.
	Throttle func(ctx context.Context, n int) error
	// Wants are the pieces readers wait for (nil: none ever): planned
	// first, and SHA-1-checked whatever their source, since a reader gets
	// them before the whole blob's digest can vouch for them.
	Wants *Wants
}

// VerifiedWriter is a Blob that records which pieces had their SHA-1
// computed (not only trusted for their source), so that a reader of a
// range need not hash them again: WritePieceVerifiedLent is WritePieceLent
// of a piece whose data matched its SHA-1.
type VerifiedWriter interface {
	WritePieceVerifiedLent(i int, data []byte, done func()) error
}

// Result is how a download through the swarm ended.
type Result struct {
	// Reason is why the swarm path gave up ("stall", "deadline"), empty
	// when every piece arrived. The pieces that arrived are kept.
	Reason       string
	FromPeers    int64
	FromRegistry int64
}

// Engine downloads one blob through the swarm. Its Run loop alone owns the
// scheduling state; fetches report back to it.
type Engine struct {
	cfg  Config
	deps Deps
	// wake (capacity 1) tells the loop a piece arrived.
	wake chan struct{}
	// The counts are written by fetches and read by the loop and Run.
	fromPeers, fromRegistry atomic.Int64
	// originBytes counts registry bytes as they arrive, for the stall
	// watch in solo.
	originBytes atomic.Int64
	// idle, when set (tests), is called each time the loop is about to
	// wait, with the number of fetches whose result it has not read and
	// how many of those results are queued.
	idle func(pending int, queued func() int)
}

// New builds an engine; Run starts it.
func New(cfg Config, deps Deps) *Engine {
	if cfg.Limits == (sched.Limits{}) {
		cfg.Limits = sched.DefaultLimits
	}
	if cfg.AssumedRate <= 0 {
		cfg.AssumedRate = DefaultAssumedRate
	}
	if deps.Clock == nil {
		deps.Clock = clockwork.NewRealClock()
	}
	if deps.Log == nil {
		l := logrus.New()
		l.SetOutput(io.Discard)
		deps.Log = logrus.NewEntry(l)
	}
	if deps.Metrics == nil {
		deps.Metrics = noMetrics{}
	}
	return &Engine{cfg: cfg, deps: deps, wake: make(chan struct{}, 1)}
}

func (e *Engine) poke() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// Run fetches every piece of the blob, or returns the reason the swarm
// path gave up. It returns an error only when ctx ends or the blob fails.
func (e *Engine) Run(ctx context.Context) (Result, error) {
	l := newLoop(e)
	reason, err := l.run(ctx)
	return Result{Reason: reason, FromPeers: e.fromPeers.Load(), FromRegistry: e.fromRegistry.Load()}, err
}

type noMetrics struct{}

func (noMetrics) PeerBytes(int, int)        {}
func (noMetrics) RegistryBytes(string, int) {}
func (noMetrics) Fallback(string)           {}
