package agent

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"fmt"
	"io"
	"maps"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"

	"github.com/shoalproject/shoal/internal/peerid"
)

// pieceSpreader decides which pieces of one blob this node fetches from the
// registry (the origin), so that the registry sends each piece about once
// however many nodes pull together; the nodes trade the rest over
// BitTorrent, where anacrolix asks for whatever connected nodes have,
// rarest first.
//
// The registry's share is fetched with HTTP Range requests, not from the
// registry's BitTorrent seeder: anacrolix requests a wanted piece from every
// connected peer that has it, and the seeder has every piece, so a node would
// take part of every piece from the seeder, including pieces its neighbours
// already hold. With the seeder out of the nodes' swarm, BitTorrent carries
// only node-to-node traffic and the spreader alone decides what the registry
// sends (Dragonfly's back-to-source works the same way).
//
// A node takes from the registry only its own share: the pieces i with
// i mod n == rank that no connected node has or has claimed, n and rank
// from the sorted peer IDs of the nodes it is connected to, a partition
// every node computes alike. A node claims a piece before fetching it (the
// shoal_claim extension message, also replayed to nodes that connect
// later), because BitTorrent only says which pieces a peer has, not which
// it is fetching, and the partition shifts while nodes join. Once its share
// is done and it has been idle a moment (no node has anything it lacks,
// nothing in flight), a node takes one unclaimed missing piece anyway
// (the owner may be slow, gone, or not yet connected): counting from the
// highest index, the end owners reach last, the rank-th of them. At most
// swarmFetches pieces of a blob are on their way from the registry at a
// time, counting the claims of the other nodes.
type pieceSpreader struct {
	t    *torrent.Torrent
	self torrent.PeerID

	mu        sync.Mutex
	inFlight  map[int]struct{} // being fetched from the registry
	idleSince time.Time

	// originSeen: the tracker named the registry's seeder (whose
	// connection the agent closes), so it has answered.
	originSeen atomic.Bool
	// solo: the swarm stalled; every missing piece is this node's share.
	solo atomic.Bool

	// changed is closed (and replaced) when something a pick depends on
	// changes: a piece's state, a claim, a fetch ending.
	changedMu sync.Mutex
	changed   chan struct{}

	// claimsMu is separate because claims arrive in anacrolix callbacks,
	// under the client lock that mu's holders take.
	claimsMu sync.Mutex
	claims   map[claimKey]time.Time
}

// claimExtension is the BitTorrent extension (BEP 10) nodes use to tell
// each other which pieces they are fetching from the registry. Payload: one
// op byte, then big-endian uint32 piece indexes.
const claimExtension pp.ExtensionName = "shoal_claim"

const (
	opClaim   = 'c'
	opRelease = 'r'
	// claimTTL bounds how long a claim holds if its release never comes
	// (the claiming node hung without closing the connection). A closed
	// connection drops its claims at once, so this can be long.
	claimTTL = 30 * time.Second
)

type claimKey struct {
	by    torrent.PeerID
	piece int
}

func encodeClaims(op byte, pieces []int) []byte {
	b := make([]byte, 1, 1+4*len(pieces))
	b[0] = op
	for _, i := range pieces {
		b = binary.BigEndian.AppendUint32(b, uint32(i))
	}
	return b
}

func decodeClaims(b []byte) (op byte, pieces []int, err error) {
	if len(b) < 1 || (len(b)-1)%4 != 0 || (b[0] != opClaim && b[0] != opRelease) {
		return 0, nil, fmt.Errorf("malformed %s message (%d bytes)", claimExtension, len(b))
	}
	for off := 1; off < len(b); off += 4 {
		pieces = append(pieces, int(binary.BigEndian.Uint32(b[off:])))
	}
	return b[0], pieces, nil
}

// received applies a claim message from another node.
func (s *pieceSpreader) received(from torrent.PeerID, payload []byte) error {
	op, pieces, err := decodeClaims(payload)
	if err != nil {
		return err
	}
	s.claimsMu.Lock()
	defer s.claimsMu.Unlock()
	now := time.Now()
	for _, i := range pieces {
		if op == opClaim {
			s.claims[claimKey{from, i}] = now
		} else {
			delete(s.claims, claimKey{from, i})
		}
	}
	if op == opRelease {
		s.poke()
	}
	return nil
}

// tell sends a claim message to every connected node, or only to pc.
func (s *pieceSpreader) tell(op byte, pieces []int, only *torrent.PeerConn) {
	if len(pieces) == 0 {
		return
	}
	msg := encodeClaims(op, pieces)
	conns := []*torrent.PeerConn{only}
	if only == nil {
		conns = s.t.PeerConns()
	}
	for _, pc := range conns {
		if !peerid.IsOrigin(pc.PeerID) {
			// Nodes without the extension (other clients) just fetch more
			// from the registry; nothing to do about it here.
			_ = pc.WriteExtendedMessage(claimExtension, msg)
		}
	}
}

// greet replays this node's claims to a node that has just connected.
func (s *pieceSpreader) greet(pc *torrent.PeerConn) {
	s.mu.Lock()
	pieces := slices.Collect(maps.Keys(s.inFlight))
	s.mu.Unlock()
	if len(pieces) == 0 {
		return
	}
	msg := encodeClaims(opClaim, pieces)
	// Called right after the peer's extended handshake arrived; the
	// extension IDs it names may not be recorded yet.
	for range 10 {
		if pc.WriteExtendedMessage(claimExtension, msg) == nil {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
}

const (
	// originWorkers is how many pieces a node fetches from the registry at
	// a time, per blob: enough to keep a LAN link busy when alone.
	originWorkers = 2
	// swarmFetches caps the pieces of a blob all nodes together fetch from
	// the registry at a time (as far as their claims tell): the registry's
	// uplink is shared, and a piece that arrives sooner is traded sooner.
	swarmFetches = 4
	// stealAfter is how long a node waits with nothing to fetch before it
	// asks the registry for a piece outside its share. Idle nodes tend to
	// be idle together, and a claim can take a while to cross links busy
	// with piece data: each waits stealStagger longer per rank, so one of
	// them steals first and tells the others.
	stealAfter   = time.Second
	stealStagger = 100 * time.Millisecond
)

func newPieceSpreader(t *torrent.Torrent, self torrent.PeerID) *pieceSpreader {
	return &pieceSpreader{t: t, self: self, inFlight: map[int]struct{}{}, claims: map[claimKey]time.Time{}, changed: make(chan struct{})}
}

// changes returns a channel closed at the next poke.
func (s *pieceSpreader) changes() <-chan struct{} {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	return s.changed
}

// poke wakes the workers waiting for something to fetch.
func (s *pieceSpreader) poke() {
	s.changedMu.Lock()
	defer s.changedMu.Unlock()
	close(s.changed)
	s.changed = make(chan struct{})
}

// swarm returns the pieces connected nodes have and the pieces they have
// claimed, and this node's rank among them and their number. Claims of
// nodes no longer connected, or too old, are forgotten.
func (s *pieceSpreader) swarm() (atNodes, claimed *roaring.Bitmap, rank, n int) {
	members := []torrent.PeerID{s.self}
	atNodes, claimed = roaring.New(), roaring.New()
	connected := map[torrent.PeerID]bool{}
	for _, pc := range s.t.PeerConns() {
		if peerid.IsOrigin(pc.PeerID) {
			continue
		}
		members = append(members, pc.PeerID)
		connected[pc.PeerID] = true
		atNodes.Or(pc.PeerPieces())
	}
	s.claimsMu.Lock()
	for k, at := range s.claims {
		if !connected[k.by] || time.Since(at) > claimTTL {
			delete(s.claims, k)
			continue
		}
		claimed.Add(uint32(k.piece))
	}
	s.claimsMu.Unlock()
	slices.SortFunc(members, func(a, b torrent.PeerID) int { return bytes.Compare(a[:], b[:]) })
	return atNodes, claimed, slices.Index(members, s.self), len(members)
}

// nextOrigin picks the next piece to fetch from the registry and claims
// it, or returns -1.
func (s *pieceSpreader) nextOrigin() int {
	i := s.pickOrigin()
	if i >= 0 {
		s.tell(opClaim, []int{i}, nil)
	}
	return i
}

func (s *pieceSpreader) pickOrigin() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	atNodes, claimed, rank, members := s.swarm()
	n := s.t.NumPieces()
	if s.solo.Load() {
		for i := range n {
			if _, busy := s.inFlight[i]; !busy && !atNodes.Contains(uint32(i)) && !s.t.PieceState(i).Complete {
				s.inFlight[i] = struct{}{}
				return i
			}
		}
		return -1
	}
	missing := func(i int) bool {
		_, busy := s.inFlight[i]
		return !busy && !claimed.Contains(uint32(i)) && !s.t.PieceState(i).Complete
	}
	pick := func(i int) int {
		s.inFlight[i] = struct{}{}
		s.idleSince = time.Time{}
		return i
	}
	if int(roaring.AndNot(claimed, atNodes).GetCardinality())+len(s.inFlight) >= swarmFetches {
		// Waiting for the registry, not idle: when the cap lifts, owners
		// take their share at once and would-be stealers start counting.
		s.idleSince = time.Time{}
		return -1
	}
	for i := rank; i < n; i += members {
		if !atNodes.Contains(uint32(i)) && missing(i) {
			return pick(i)
		}
	}
	idle := len(s.inFlight) == 0
	for it := atNodes.Iterator(); idle && it.HasNext(); {
		if i := int(it.Next()); i < n && missing(i) {
			idle = false
		}
	}
	switch {
	case !idle:
		s.idleSince = time.Time{}
		return -1
	case s.idleSince.IsZero():
		s.idleSince = time.Now()
		return -1
	case time.Since(s.idleSince) < stealAfter+time.Duration(rank)*stealStagger:
		return -1
	}
	var candidates []int
	for i := n - 1; i >= 0; i-- {
		if !atNodes.Contains(uint32(i)) && missing(i) {
			candidates = append(candidates, i)
		}
	}
	if len(candidates) == 0 {
		return -1
	}
	return pick(candidates[rank%len(candidates)])
}

// settle waits until the tracker has answered and this node has connected
// to the nodes it named, so that the first pieces taken from the registry
// are already split among them. It gives up after a short while: the
// tracker may be down, or name no one.
func (s *pieceSpreader) settle(ctx context.Context) {
	const limit, poll = time.Second, 5 * time.Millisecond
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		st := s.t.Stats()
		if (st.TotalPeers > 0 || s.originSeen.Load()) && st.PendingPeers == 0 && st.HalfOpenPeers == 0 {
			if st.ActivePeers > 0 {
				// Let the claims of the nodes just connected arrive.
				select {
				case <-ctx.Done():
				case <-time.After(settleGrace):
				}
			}
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(poll):
		}
	}
}

// settleGrace is how long the claims of nodes just connected take to come.
const settleGrace = 20 * time.Millisecond

// goSolo makes every missing piece this node's share, claimed or not.
func (s *pieceSpreader) goSolo() {
	s.solo.Store(true)
	s.poke()
}

// busy reports whether registry fetches of this node are under way.
func (s *pieceSpreader) busy() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.inFlight) > 0
}

// originDone ends a registry fetch; a failed piece is missing again and
// released to the other nodes (a verified one is announced by anacrolix).
func (s *pieceSpreader) originDone(i int, ok bool) {
	s.mu.Lock()
	delete(s.inFlight, i)
	s.mu.Unlock()
	s.poke()
	if !ok {
		s.tell(opRelease, []int{i}, nil)
	}
}

// originFetcher fetches the registry's share of a blob's pieces with HTTP
// Range requests, checks their SHA-1 and hands them to the torrent, which
// announces them to the other nodes.
type originFetcher struct {
	d     *dl
	t     *torrent.Torrent
	info  *metainfo.Info
	url   string
	bytes atomic.Int64 // piece bytes fetched (verified or not)
}

func (o *originFetcher) run(ctx context.Context, s *pieceSpreader) {
	buf := make([]byte, o.info.PieceLength)
	failures := 0
	for ctx.Err() == nil {
		changed := s.changes()
		i := s.nextOrigin()
		if i < 0 {
			// The timer drives the idle clock of stealing.
			select {
			case <-ctx.Done():
			case <-changed:
			case <-time.After(100 * time.Millisecond):
			}
			continue
		}
		err := o.fetch(ctx, i, buf)
		s.originDone(i, err == nil)
		if err == nil {
			failures = 0
			continue
		}
		if ctx.Err() != nil {
			return
		}
		failures++
		o.d.a.log.WithError(err).WithField("digest", "sha256:"+o.d.req.hex).Debug("piece from registry failed")
		// The registry may be restarting; the swarm's stall timer decides
		// when to give up on pieces altogether.
		select {
		case <-ctx.Done():
		case <-time.After(time.Duration(min(failures, 10)) * 100 * time.Millisecond):
		}
	}
}

// pieceTimeout bounds one Range request: a hung registry connection must not
// hold a piece (and keep the download from counting as stalled) forever.
const pieceTimeout = time.Minute

func (o *originFetcher) fetch(ctx context.Context, i int, buf []byte) error {
	ctx, cancel := context.WithTimeout(ctx, pieceTimeout)
	defer cancel()
	p := o.info.Piece(i)
	b := buf[:p.Length()]
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, o.url, nil)
	if err != nil {
		return err
	}
	if o.d.req.auth != "" {
		req.Header.Set("Authorization", o.d.req.auth)
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", p.Offset(), p.Offset()+p.Length()-1))
	resp, err := o.d.a.plain.Do(req)
	if err != nil {
		return fmt.Errorf("piece %d: %w", i, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent {
		return fmt.Errorf("piece %d: registry answered a Range request with %s", i, resp.Status)
	}
	if err := o.d.a.waitHTTP(ctx, len(b)); err != nil {
		return err
	}
	n, err := io.ReadFull(resp.Body, b)
	o.bytes.Add(int64(n))
	if err != nil {
		return fmt.Errorf("piece %d: %w", i, err)
	}
	// Checked before it touches the file: anacrolix may be writing chunks
	// of the same piece from a node.
	if sum := sha1.Sum(b); !bytes.Equal(sum[:], p.V1Hash().Value.Bytes()) {
		return fmt.Errorf("piece %d from the registry failed its SHA-1 check", i)
	}
	if _, err := o.d.f.file.WriteAt(b, p.Offset()); err != nil {
		return fmt.Errorf("write piece %d: %w", i, err)
	}
	// Already verified: mark it complete in storage and let anacrolix pick
	// that up (and tell the nodes) instead of hashing it a second time.
	piece := o.t.Piece(i)
	if err := piece.Storage().MarkComplete(); err != nil {
		return fmt.Errorf("mark piece %d complete: %w", i, err)
	}
	piece.UpdateCompletion()
	return nil
}
