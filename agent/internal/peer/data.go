package peer

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/gorilla/mux"

	"github.com/shoalproject/shoal/agent/internal/store"
	"github.com/shoalproject/shoal/internal/httprange"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/peerid"
)

// The data path: Shoal nodes move piece bytes between them over HTTPS
// Range requests on a listener of their own. Measured on loopback,
// anacrolix's wire costs ~4 CPU-s per GiB in user-space copies at its best
// chunk size; a Range request moves a run of pieces in large TLS records.
// The BitTorrent connection stays for membership and availability, and
// tells the peer where this listener is (shoalExtension, opData).
//
// Who may read: a member of the cluster (the listener is mutual TLS with
// cluster certificates, client.go), and of those only one whose address is a
// connected BitTorrent peer of that torrent. The second check is defense in
// depth: a member must at least have joined the torrent's swarm — over the
// peer wire, itself members only — before it is served, so a node that was
// told an infohash cannot read the blob from every node without showing
// up as a peer of it.
const DataPathPrefix = "/_shoal/p2p/v1/pieces/"

func (c *Client) dataHandler() http.Handler {
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	r.HandleFunc(DataPathPrefix+"{ih:[0-9a-f]{40}}", c.handlePieces).Methods(http.MethodGet)
	return r
}

func (c *Client) handlePieces(w http.ResponseWriter, r *http.Request) {
	var ih metainfo.Hash
	if _, err := hex.Decode(ih[:], []byte(mux.Vars(r)["ih"])); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "", "invalid infohash")
		return
	}
	st, ok := c.cfg.Readers.Lookup(ih)
	if !ok || !c.isPeerOf(ih, r.RemoteAddr) {
		c.stats.refused.Add(1)
		// The same answer for "unknown" and "not yours": nothing to learn.
		httpx.WriteError(w, http.StatusNotFound, "", "no such torrent for this peer")
		return
	}
	start, n, ok := httprange.Parse(r.Header.Values("Range"), st.Length())
	if !ok {
		c.stats.refused.Add(1)
		httpx.WriteError(w, http.StatusRequestedRangeNotSatisfiable, "", "a single byte range is required")
		return
	}
	end := start + n - 1
	if !st.HasRange(start, n) {
		c.stats.refused.Add(1)
		httpx.WriteError(w, http.StatusRequestedRangeNotSatisfiable, "", "range not present here")
		return
	}
	// A few uploads at a time, like BitTorrent's unchoked peers: a piece
	// sent to everyone at once reaches everyone late, while one sent to a
	// few is soon relayed by them. The others are told to ask elsewhere.
	select {
	case c.slots <- struct{}{}:
		defer func() { <-c.slots }()
	default:
		c.stats.busy.Add(1)
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, http.StatusServiceUnavailable, "", "no upload slot free; ask another node")
		return
	}
	// A descriptor of its own (own offset, for sendfile) on the storage's
	// open file: valid after the partial file was renamed into the cache.
	f, err := st.Open()
	if err != nil {
		httpx.WriteError(w, http.StatusNotFound, "", "torrent closed")
		return
	}
	defer f.Close()
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, st.Length()))
	w.WriteHeader(http.StatusPartialContent)
	var sent int64
	if r.TLS != nil && c.uploadRate == nil {
		sent, _ = sendSealed(w, f, start, n)
	} else {
		sent, _ = store.SendRange(r.Context(), w, f, start, n, c.uploadRate)
	}
	c.served.Add(sent)
	c.stats.served.Add(1)
}

// DataStats counts the data path's answers and connections since the
// client started.
type DataStats struct {
	// Served: ranges sent. Busy: "no upload slot free" (the requester
	// asks another node). Refused: not held here, not a peer of the
	// torrent, or a bad range.
	Served, Busy, Refused int64
	// Connections accepted: each is a mutual-TLS handshake, so a
	// connection count growing with the requests means connections are
	// not being reused.
	Connections int64
}

type dataStats struct {
	served, busy, refused, conns atomic.Int64
}

// DataStats reports the data path's counters.
func (c *Client) DataStats() DataStats {
	return DataStats{Served: c.stats.served.Load(), Busy: c.stats.busy.Load(),
		Refused: c.stats.refused.Load(), Connections: c.stats.conns.Load()}
}

// DataSendBuffer is the socket send buffer of the data listener's
// connections (the kernel doubles it). An upload slot is held while the
// handler writes; with the kernel's autotuned buffer (up to 4 MiB) a
// one-piece response is in the buffer at once and the slot is free again
// while the piece still crosses the link, so a node holding a rare piece
// served every requester at once at a fraction of its uplink each
// (issue 20). With a small buffer the slot is held until all but this
// much is delivered. 128 KiB (256 KiB in the kernel) is still above the
// bandwidth-delay product of a LAN (10 Gbit/s × 0.2 ms = 250 KB).
const DataSendBuffer = 128 << 10

// sendBufferListener sets DataSendBuffer on every accepted connection,
// and counts them.
type sendBufferListener struct {
	net.Listener
	n *atomic.Int64
}

func (l sendBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.n.Add(1)
	if tc, ok := c.(*net.TCPConn); ok {
		// Best effort: a failure leaves the kernel's default, which only
		// loses the slots' effect.
		_ = tc.SetWriteBuffer(DataSendBuffer)
	}
	return c, nil
}

// sealBufs are sendSealed's read buffers.
var sealBufs = sync.Pool{New: func() any { b := make([]byte, 256<<10); return &b }}

// sendSealed copies n bytes of f from off to a TLS response. TLS loses
// sendfile (Go has no kernel TLS): every byte is read into user space,
// sealed (AES-GCM, hardware-accelerated) and written. net/http would copy
// in 32 KiB steps; 256 KiB reads cost an eighth of the read calls, and
// each write becomes sixteen full 16 KiB records.
func sendSealed(w io.Writer, f *os.File, off, n int64) (int64, error) {
	bp := sealBufs.Get().(*[]byte)
	defer sealBufs.Put(bp)
	// Hide the ResponseWriter's ReadFrom, which would bring back its own
	// 32 KiB buffer.
	return io.CopyBuffer(struct{ io.Writer }{w}, io.NewSectionReader(f, off, n), *bp)
}

// isPeerOf reports whether remote (host:port) is the address of a node
// connected to the torrent.
func (c *Client) isPeerOf(ih metainfo.Hash, remote string) bool {
	if c.tc == nil {
		return false
	}
	t, ok := c.tc.Torrent(ih)
	if !ok {
		return false
	}
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		return false
	}
	ip := net.ParseIP(host)
	for _, pc := range t.PeerConns() {
		if peerid.IsOrigin(pc.PeerID) {
			continue
		}
		if ph, _, err := net.SplitHostPort(pc.RemoteAddr.String()); err == nil && net.ParseIP(ph).Equal(ip) {
			return true
		}
	}
	return false
}

// ServeData serves the data path on the listener Start opened until ctx
// ends. The listener is the members-only TLS listener itself, so the
// server needs no TLSConfig of its own. Refused handshakes (strangers,
// scanners) are the listener doing its job: httpx.NewServer logs them at
// debug level only.
func (c *Client) ServeData(ctx context.Context) error {
	if c.dataL == nil {
		return errors.New("data listener not open")
	}
	return httpx.Serve(ctx, httpx.NewServer(c.dataHandler(), c.cfg.Log.WithField("listener", "data")), c.dataL)
}
