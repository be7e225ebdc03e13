package agent

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
)

// The data path serves only connected BitTorrent peers of the torrent;
// anyone else learns nothing, not even whether the torrent exists here.
func TestDataServerRefusesStrangers(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.P2P.Enabled = false
	a, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ih := metainfo.HashBytes([]byte("some blob"))
	a.stores.Store(ih, &fileTorrent{f: f, has: func(int) bool { return true }, pieceLen: 1 << 18, length: 1 << 20})

	h := a.dataHandler()
	for _, tc := range []struct {
		name, path, rng string
		want            int
	}{
		{"known torrent, not a peer", dataPathPrefix + ih.HexString(), "bytes=0-1023", http.StatusNotFound},
		{"unknown torrent", dataPathPrefix + metainfo.HashBytes([]byte("x")).HexString(), "bytes=0-1023", http.StatusNotFound},
		{"malformed infohash", dataPathPrefix + "zz", "bytes=0-1023", http.StatusNotFound},
		{"other paths", "/v2/", "", http.StatusNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			req := httptest.NewRequest(http.MethodGet, tc.path, nil)
			req.RemoteAddr = "192.0.2.7:4242"
			if tc.rng != "" {
				req.Header.Set("Range", tc.rng)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			if rec.Code != tc.want {
				t.Fatalf("status %d, want %d (%s)", rec.Code, tc.want, rec.Body)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("error body Content-Type %q, want application/json", ct)
			}
		})
	}
}

func TestFileTorrentHasRange(t *testing.T) {
	present := map[int]bool{0: true, 1: true, 3: true}
	ft := &fileTorrent{has: func(i int) bool { return present[i] }, pieceLen: 100, length: 350}
	for _, tc := range []struct {
		off, n int64
		want   bool
	}{
		{0, 200, true},
		{150, 50, true},
		{150, 60, false}, // reaches piece 2
		{300, 50, true},  // the short last piece
		{300, 51, false}, // beyond the blob
		{-1, 10, false},
		{0, 0, false},
	} {
		if got := ft.hasRange(tc.off, tc.n); got != tc.want {
			t.Errorf("hasRange(%d, %d) = %v, want %v", tc.off, tc.n, got, tc.want)
		}
	}
}
