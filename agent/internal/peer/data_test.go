package peer

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/agent/internal/store"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/secret"
)

// The data path serves only connected BitTorrent peers of the torrent;
// anyone else learns nothing, not even whether the torrent exists here.
func TestDataServerRefusesStrangers(t *testing.T) {
	auth, err := cluster.NewAuthority(secret.Generate())
	if err != nil {
		t.Fatal(err)
	}
	id, err := auth.Issue("node", nil)
	if err != nil {
		t.Fatal(err)
	}
	readers := &store.Readers{}
	c := New(Config{UploadSlots: 1, Authority: auth, Identity: id, Readers: readers,
		Transport: &http.Transport{}, Log: logrus.NewEntry(logrus.New())})
	path := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(path, make([]byte, 1<<20), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ih := metainfo.HashBytes([]byte("some blob"))
	r := store.NewReader(f, 1<<18, 1<<20, func(int) bool { return true })
	defer r.Close()
	readers.Add(ih, r)

	h := c.dataHandler()
	for _, tc := range []struct {
		name, path, rng string
		want            int
	}{
		{"known torrent, not a peer", DataPathPrefix + ih.HexString(), "bytes=0-1023", http.StatusNotFound},
		{"unknown torrent", DataPathPrefix + metainfo.HashBytes([]byte("x")).HexString(), "bytes=0-1023", http.StatusNotFound},
		{"malformed infohash", DataPathPrefix + "zz", "bytes=0-1023", http.StatusNotFound},
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
	// Two of the four reached the handler's checks (the others failed
	// routing); both count as refused, nothing as served.
	if st := c.DataStats(); st.Refused != 2 || st.Served != 0 || st.Busy != 0 {
		t.Errorf("stats %+v, want 2 refused", st)
	}
}
