package agent

import (
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/gorilla/mux"
	"golang.org/x/time/rate"

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
// cluster certificates, agent.go), and of those only one whose address is a
// connected BitTorrent peer of that torrent. The second check is defense in
// depth: a member must at least have joined the torrent's swarm — over the
// peer wire, itself members only — before it is served, so a node that was
// told an infohash cannot read the blob from every node without showing
// up as a peer of it.
const dataPathPrefix = "/_shoal/p2p/v1/pieces/"

func (a *Agent) dataHandler() http.Handler {
	r := newRouter()
	r.HandleFunc(dataPathPrefix+"{ih:[0-9a-f]{40}}", a.handlePieces).Methods(http.MethodGet)
	return r
}

func (a *Agent) handlePieces(w http.ResponseWriter, r *http.Request) {
	var ih metainfo.Hash
	if _, err := hex.Decode(ih[:], []byte(mux.Vars(r)["ih"])); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "", "invalid infohash")
		return
	}
	v, ok := a.stores.Load(ih)
	if !ok || !a.isPeerOf(ih, r.RemoteAddr) {
		// The same answer for "unknown" and "not yours": nothing to learn.
		httpx.WriteError(w, http.StatusNotFound, "", "no such torrent for this peer")
		return
	}
	st := v.(*fileTorrent)
	start, end, partial, err := parseRange(r.Header.Values("Range"), st.length)
	if err != nil || !partial {
		httpx.WriteError(w, http.StatusRequestedRangeNotSatisfiable, "", "a single byte range is required")
		return
	}
	if !st.hasRange(start, end-start+1) {
		httpx.WriteError(w, http.StatusRequestedRangeNotSatisfiable, "", "range not present here")
		return
	}
	// A few uploads at a time, like BitTorrent's unchoked peers: a piece
	// sent to everyone at once reaches everyone late, while one sent to a
	// few is soon relayed by them. The others are told to ask elsewhere.
	select {
	case a.uploadSlots <- struct{}{}:
		defer func() { <-a.uploadSlots }()
	default:
		w.Header().Set("Retry-After", "1")
		httpx.WriteError(w, http.StatusServiceUnavailable, "", "no upload slot free; ask another node")
		return
	}
	// A descriptor of its own (own offset, for sendfile) on the storage's
	// open file: valid after the partial file was renamed into the cache.
	f, err := st.reopen()
	if err != nil {
		httpx.WriteError(w, http.StatusNotFound, "", "torrent closed")
		return
	}
	defer f.Close()
	n := end - start + 1
	w.Header().Set("Content-Type", "application/octet-stream")
	w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
	w.Header().Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, end, st.length))
	w.WriteHeader(http.StatusPartialContent)
	var sent int64
	if r.TLS != nil && a.uploadRate == nil {
		sent, _ = sendSealed(w, f, start, n)
	} else {
		sent, _ = sendRange(r.Context(), w, f, start, n, a.uploadRate)
	}
	a.servedBytes.Add(sent)
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

// sendRange copies n bytes of f from off to w: one sendfile(2) when no rate
// limit applies (net/http hands an *os.File behind an io.LimitedReader to
// the kernel), limiter-sized steps otherwise. f's offset moves: give it a
// descriptor of its own.
func sendRange(ctx context.Context, w io.Writer, f *os.File, off, n int64, lim *rate.Limiter) (int64, error) {
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		return 0, err
	}
	if lim == nil {
		return io.Copy(w, io.LimitReader(f, n))
	}
	var sent int64
	for sent < n {
		step := min(n-sent, int64(lim.Burst()))
		if err := lim.WaitN(ctx, int(step)); err != nil {
			return sent, err
		}
		m, err := io.Copy(w, io.LimitReader(f, step))
		sent += m
		if err != nil {
			return sent, err
		}
	}
	return sent, nil
}

// isPeerOf reports whether remote (host:port) is the address of a node
// connected to the torrent.
func (a *Agent) isPeerOf(ih metainfo.Hash, remote string) bool {
	if a.tc == nil {
		return false
	}
	t, ok := a.tc.Torrent(ih)
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

// dataServer is the data path's HTTP server. Its listener (dataL) is the
// members-only TLS listener itself, so the server needs no TLSConfig of its
// own. Refused handshakes (strangers, scanners) are the listener doing its
// job: httpx.NewServer logs them at debug level only.
func (a *Agent) dataServer() *http.Server {
	return httpx.NewServer(a.dataHandler(), a.log.WithField("listener", "data"))
}
