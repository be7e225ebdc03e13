package peer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/RoaringBitmap/roaring/v2"
	"github.com/anacrolix/torrent"

	"github.com/shoalproject/shoal/agent/sched"
	"github.com/shoalproject/shoal/agent/swarm"
	"github.com/shoalproject/shoal/internal/peerid"
)

// claimTTL bounds how long a claim holds if its release never comes (the
// claiming node hung without closing the connection). A closed connection
// drops its claims at once, so this can be long.
const claimTTL = 30 * time.Second

// askDataPortEvery paces asking a node that has pieces for its data port.
const askDataPortEvery = 500 * time.Millisecond

// Swarm is one torrent's swarm as the engine sees it (swarm.Peers): the
// connected nodes and their pieces, their registry claims, and the data
// path to them. Anacrolix callbacks (Client) write into it.
type Swarm struct {
	c       *Client
	t       *torrent.Torrent
	length  int64
	pieces  int
	changed chan struct{} // capacity 1

	mu         sync.Mutex
	claims     map[claimKey]time.Time // other nodes' registry fetches
	mine       map[int]struct{}       // this node's, replayed to nodes that connect later
	asked      map[torrent.PeerID]time.Time
	originSeen bool // the tracker named the registry's seeder: it has answered
	// copies are copies of the connected nodes' pieces, reused by Nodes
	// until the node sends a message that changes them (gen): the engine
	// plans many times per piece, and copying every node's bitmap for
	// every plan was a quarter of an agent's CPU at N = 24 (issue 20).
	copies map[*torrent.PeerConn]peerPieces
}

type peerPieces struct {
	gen    uint64          // changes to the node's pieces so far
	has    *roaring.Bitmap // the copy, nil if none
	hasGen uint64          // gen when has was copied
}

type claimKey struct {
	by    torrent.PeerID
	piece int
}

var _ swarm.Peers = (*Swarm)(nil)

func newSwarm(c *Client, t *torrent.Torrent, length int64, pieces int) *Swarm {
	return &Swarm{c: c, t: t, length: length, pieces: pieces, changed: make(chan struct{}, 1),
		claims: map[claimKey]time.Time{}, mine: map[int]struct{}{}, asked: map[torrent.PeerID]time.Time{},
		copies: map[*torrent.PeerConn]peerPieces{}}
}

// changedPieces counts a message that changes what pc has.
func (s *Swarm) changedPieces(pc *torrent.PeerConn) {
	s.mu.Lock()
	p := s.copies[pc]
	p.gen++
	s.copies[pc] = p
	s.mu.Unlock()
}

// forget drops what the swarm keeps of a closed connection.
func (s *Swarm) forget(pc *torrent.PeerConn) {
	s.mu.Lock()
	delete(s.copies, pc)
	s.mu.Unlock()
}

// peerPieces is pc's pieces: the copy kept since its last change, or a
// new one. The bitmaps handed out are never modified.
func (s *Swarm) peerPieces(pc *torrent.PeerConn) *roaring.Bitmap {
	s.mu.Lock()
	p := s.copies[pc]
	s.mu.Unlock()
	if p.has != nil && p.hasGen == p.gen {
		return p.has
	}
	// Not under s.mu: PeerPieces takes the client's lock, under which
	// changedPieces is called. A change counted before this copy is in
	// it; one counted after makes the next call copy again.
	has := pc.PeerPieces()
	s.mu.Lock()
	if cur := s.copies[pc]; cur.gen == p.gen {
		s.copies[pc] = peerPieces{gen: p.gen, has: has, hasGen: p.gen}
	}
	s.mu.Unlock()
	return has
}

func (s *Swarm) poke() {
	select {
	case s.changed <- struct{}{}:
	default:
	}
}

// Changed implements swarm.Peers.
func (s *Swarm) Changed() <-chan struct{} { return s.changed }

// Self implements swarm.Peers.
func (s *Swarm) Self() string {
	id := s.c.tc.PeerID()
	return string(id[:])
}

// Nodes implements swarm.Peers. A node with pieces whose data port this
// node has not heard is asked for it (paced).
func (s *Swarm) Nodes() []sched.Peer {
	now := time.Now()
	var out []sched.Peer
	for _, pc := range s.t.PeerConns() {
		if peerid.IsOrigin(pc.PeerID) {
			continue
		}
		p := sched.Peer{ID: string(pc.PeerID[:]), Has: s.peerPieces(pc)}
		if _, ok := s.c.ports.Load(pc); ok {
			p.Data = true
		} else if !p.Has.IsEmpty() && s.askDue(pc.PeerID, now) {
			go s.c.tellDataPort(pc, opDataAsk)
		}
		out = append(out, p)
	}
	return out
}

func (s *Swarm) askDue(id torrent.PeerID, now time.Time) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if now.Sub(s.asked[id]) < askDataPortEvery {
		return false
	}
	s.asked[id] = now
	return true
}

// Formation implements swarm.Peers. Peers the tracker named beyond the
// connection cap stay pending for good: they are not connections being
// made, and counting them kept every node of a big swarm waiting the
// whole settle limit (issue 20).
func (s *Swarm) Formation() (answered, forming bool) {
	st := s.t.Stats()
	s.mu.Lock()
	originSeen := s.originSeen
	s.mu.Unlock()
	return st.TotalPeers > 0 || originSeen, stillForming(st.PendingPeers, st.HalfOpenPeers, st.ActivePeers, MaxConnsPerTorrent)
}

// MaxConnsPerTorrent is the most nodes a torrent is connected to
// (anacrolix's default). Every connection is a mutual-TLS handshake, an
// anacrolix read buffer of 128 KiB and a have message per piece gained,
// for each layer: N² of them with everyone connected (issue 20). Fewer
// connections give nodes different views of a big swarm, so rendezvous
// shares get several owners per block; the registry refuses all but the
// first (internal/regshare), so that costs no egress.
const MaxConnsPerTorrent = 50

// stillForming: connections are being dialled, or nodes named by the tracker
// wait for a dial while the torrent has room for them.
func stillForming(pending, halfOpen, active, limit int) bool {
	return halfOpen > 0 || (pending > 0 && active < limit)
}

// Claimed implements swarm.Peers: claims of connected nodes younger than
// claimTTL.
func (s *Swarm) Claimed(now time.Time, ignore func(id string) bool) *roaring.Bitmap {
	// Most plans happen with no claim held: skip listing the connections
	// (a lock of the torrent and an allocation per plan).
	s.mu.Lock()
	none := len(s.claims) == 0
	s.mu.Unlock()
	if none {
		return roaring.New()
	}
	connected := map[torrent.PeerID]bool{}
	for _, pc := range s.t.PeerConns() {
		if !peerid.IsOrigin(pc.PeerID) && !ignore(string(pc.PeerID[:])) {
			connected[pc.PeerID] = true
		}
	}
	out := roaring.New()
	s.mu.Lock()
	defer s.mu.Unlock()
	for k, at := range s.claims {
		if !connected[k.by] || now.Sub(at) > claimTTL {
			delete(s.claims, k)
			continue
		}
		out.Add(uint32(k.piece))
	}
	return out
}

// Claim implements swarm.Peers.
func (s *Swarm) Claim(pieces []int) {
	s.mu.Lock()
	for _, i := range pieces {
		s.mine[i] = struct{}{}
	}
	s.mu.Unlock()
	s.tell(opClaim, pieces)
}

// Unclaim implements swarm.Peers: failed pieces are released to the other
// nodes (a piece that arrived is announced by anacrolix instead).
func (s *Swarm) Unclaim(pieces []int, failed bool) {
	s.mu.Lock()
	for _, i := range pieces {
		delete(s.mine, i)
	}
	s.mu.Unlock()
	if failed {
		s.tell(opRelease, pieces)
	}
}

// Arrived implements swarm.Peers: anacrolix reads presence from the blob;
// this makes it look and announce the piece to the nodes.
func (s *Swarm) Arrived(i int) { s.t.Piece(i).UpdateCompletion() }

// tell sends a claim message to every connected node.
func (s *Swarm) tell(op byte, pieces []int) {
	if len(pieces) == 0 {
		return
	}
	msg := encodeClaims(op, pieces)
	for _, pc := range s.t.PeerConns() {
		if !peerid.IsOrigin(pc.PeerID) {
			// Nodes without the extension (other clients) just fetch more
			// from the registry; nothing to do about it here.
			_ = pc.WriteExtendedMessage(shoalExtension, msg)
		}
	}
}

// receivedClaims applies a claim or release from another node. Indexes
// beyond the blob are dropped: the map holds at most one claim per piece
// and connected node.
func (s *Swarm) receivedClaims(from torrent.PeerID, op byte, pieces []int) {
	s.mu.Lock()
	now := time.Now()
	for _, i := range pieces {
		if i < 0 || i >= s.pieces {
			continue
		}
		if op == opClaim {
			s.claims[claimKey{from, i}] = now
		} else {
			delete(s.claims, claimKey{from, i})
		}
	}
	s.mu.Unlock()
	s.poke()
}

// greet replays this node's claims to a node that has just connected (a
// lost replay means the node fetches our claimed pieces too).
func (s *Swarm) greet(pc *torrent.PeerConn) {
	s.mu.Lock()
	pieces := slices.Collect(maps.Keys(s.mine))
	s.mu.Unlock()
	if len(pieces) > 0 {
		SendExtension(pc, encodeClaims(opClaim, pieces))
	}
}

func (s *Swarm) sawOrigin() {
	s.mu.Lock()
	s.originSeen = true
	s.mu.Unlock()
	s.poke()
}

// ReadRange implements swarm.Peers over the data path.
func (s *Swarm) ReadRange(ctx context.Context, id string, off, n int64) (io.ReadCloser, error) {
	addr := s.dataAddr(id)
	if addr == "" {
		return nil, errors.New("node has no data address")
	}
	target := "https://" + addr + DataPathPrefix + hex.EncodeToString(s.t.InfoHash().Bytes())
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, off+n-1))
	resp, err := s.c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, fmt.Errorf("from %s: %w", addr, err)
	}
	return swarm.RangeBody(resp, off, n, s.length)
}

// dataAddr is where node id serves pieces ("" if unknown).
func (s *Swarm) dataAddr(id string) string {
	for _, pc := range s.t.PeerConns() {
		if string(pc.PeerID[:]) != id {
			continue
		}
		port, ok := s.c.ports.Load(pc)
		if !ok {
			continue
		}
		if host, _, err := net.SplitHostPort(pc.RemoteAddr.String()); err == nil {
			return net.JoinHostPort(host, strconv.Itoa(port.(int)))
		}
	}
	return ""
}
