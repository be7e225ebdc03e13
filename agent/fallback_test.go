package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// A registry that offers a torrent nobody can deliver (dead tracker, piece
// Range requests answering 500) and whose first plain HTTP answer breaks
// mid-body: the agent gives up on the swarm after two stall timeouts (the
// second with every piece its own), fetches over HTTP, resumes with Range
// after the break, and serves the exact blob.
func TestFallbackStallThenHTTPResume(t *testing.T) {
	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	sum := sha256.Sum256(data)
	hexd := hex.EncodeToString(sum[:])
	var plainGets, rangeGets, pieceGets, torrentGets atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/torrent":
			torrentGets.Add(1)
			serveTorrent(t, w, hexd, data)
		case strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+hexd):
			if r.Header.Get("Accept") == "application/x-bittorrent" {
				http.Redirect(w, r, srv.URL+"/torrent", http.StatusTemporaryRedirect)
				return
			}
			switch rg := r.Header.Get("Range"); {
			case strings.HasSuffix(rg, "-"): // resuming: bytes=N-
				rangeGets.Add(1)
			case rg != "": // one piece: bytes=N-M
				pieceGets.Add(1)
				http.Error(w, "broken", http.StatusInternalServerError)
				return
			case r.Method == http.MethodHead: // the agent's access check
			case plainGets.Add(1) == 1:
				// First plain answer: promise everything, deliver 1 MiB, break.
				w.Header().Set("Content-Length", strconv.Itoa(len(data)))
				w.Write(data[:1<<20])
				panic(http.ErrAbortHandler)
			}
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	host := strings.TrimPrefix(srv.URL, "http://")
	ag := startAgent(t, testConfig(t, host))
	d := v1.Hash{Algorithm: "sha256", Hex: hexd}
	start := time.Now()
	st, got, _ := getBlob(t, ag.mirror, "lib/fb", d, nil)
	if st != 200 || got != d.String() {
		t.Fatalf("pull: %d %s", st, got)
	}
	t.Logf("pulled in %s", time.Since(start))
	if torrentGets.Load() != 1 {
		t.Errorf("torrent metadata fetched %d times, want 1", torrentGets.Load())
	}
	if pieceGets.Load() == 0 {
		t.Error("pieces never asked of the registry before HTTP fallback")
	}
	if v := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="solo"}`); v != 1 {
		t.Errorf("solo fallbacks = %v, want 1", v)
	}
	if rangeGets.Load() == 0 {
		t.Error("interrupted HTTP transfer was not resumed with Range")
	}
	if v := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="stall"}`); v != 1 {
		t.Errorf("stall fallbacks = %v, want 1", v)
	}
	if v := metric(t, ag.mirror, `shoal_agent_blob_bytes_total{source="registry"}`); v != float64(len(data)) {
		t.Errorf("registry bytes = %v, want %d", v, len(data))
	}
}

// A registry that fails to answer the first torrent requests (the
// connection drops, as an overloaded one's does) is asked again: the blob
// still comes through the swarm engine, never as a whole-blob HTTP GET.
func TestTorrentRequestRetried(t *testing.T) {
	data := make([]byte, 2<<20+777)
	rand.Read(data)
	sum := sha256.Sum256(data)
	hexd := hex.EncodeToString(sum[:])
	var plainGets, torrentGets atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/torrent":
			if torrentGets.Add(1) <= 2 {
				panic(http.ErrAbortHandler)
			}
			serveTorrent(t, w, hexd, data)
		case strings.HasSuffix(r.URL.Path, "/blobs/sha256:"+hexd):
			if r.Header.Get("Accept") == "application/x-bittorrent" {
				http.Redirect(w, r, srv.URL+"/torrent", http.StatusTemporaryRedirect)
				return
			}
			if r.Method == http.MethodGet && r.Header.Get("Range") == "" {
				plainGets.Add(1)
			}
			http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
		default:
			http.NotFound(w, r)
		}
	}))
	defer srv.Close()
	ag := startAgent(t, testConfig(t, strings.TrimPrefix(srv.URL, "http://")))
	d := v1.Hash{Algorithm: "sha256", Hex: hexd}
	if st, got, _ := getBlob(t, ag.mirror, "lib/retry", d, nil); st != 200 || got != d.String() {
		t.Fatalf("pull: %d %s", st, got)
	}
	if n := torrentGets.Load(); n != 3 {
		t.Errorf("torrent metadata asked %d times, want 3 (two dropped, then answered)", n)
	}
	if n := plainGets.Load(); n != 0 {
		t.Errorf("%d whole-blob GETs: the agent fell back to plain HTTP", n)
	}
	if v := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="torrent_request_failed"}`); v != 0 {
		t.Errorf("torrent_request_failed fallbacks = %v, want 0", v)
	}
}

// serveTorrent answers with a private torrent of data in 256 KiB pieces
// whose tracker is dead: a node that gets it is alone with the registry.
func serveTorrent(t *testing.T, w http.ResponseWriter, hexd string, data []byte) {
	info := metainfo.Info{Name: hexd, Length: int64(len(data)), PieceLength: 256 << 10}
	priv := true
	info.Private = &priv
	if err := info.GeneratePieces(func(metainfo.FileInfo) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}); err != nil {
		t.Error(err)
	}
	mi := metainfo.MetaInfo{InfoBytes: bencode.MustMarshal(info), Announce: "http://127.0.0.1:1/announce?token=x"}
	w.Header().Set("Content-Type", "application/x-bittorrent")
	mi.Write(w)
}
