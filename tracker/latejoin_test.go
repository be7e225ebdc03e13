package tracker

import (
	"context"
	"crypto/rand"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"
)

func newTorrentClient(t *testing.T, dir string) *torrent.Client {
	t.Helper()
	cc := torrent.NewDefaultClientConfig()
	cc.DataDir = dir
	cc.DefaultStorage = storage.NewFileWithCompletion(dir, storage.NewMapPieceCompletion())
	// Required with the go-utp stub, and keep the test off public networks.
	cc.DisableUTP = true
	cc.NoDHT = true
	cc.DisableIPv6 = true
	cc.NoDefaultPortForwarding = true
	cc.Seed = true
	// Keep the connection after the download so the test can see it.
	cc.DropMutuallyCompletePeers = false
	cc.SetListenAddr("127.0.0.1:0")
	cl, err := torrent.NewClient(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	return cl
}

// TestLateJoinerDiscovery shows peer discovery does not depend on
// re-announcing (anacrolix clients wait at least a minute between
// announces): a late joiner gets the earlier peer from its first announce,
// and the earlier peer, which never announces again during the test, learns
// of the late joiner through the connection it makes.
func TestLateJoinerDiscovery(t *testing.T) {
	if testing.Short() {
		t.Skip("runs two torrent clients")
	}
	tt := memTracker(t, testConfig())

	seedDir, leechDir := t.TempDir(), t.TempDir()
	data := make([]byte, 4<<20)
	rand.Read(data)
	if err := os.WriteFile(filepath.Join(seedDir, "blob"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{PieceLength: 256 << 10}
	if err := info.BuildFromFilePath(filepath.Join(seedDir, "blob")); err != nil {
		t.Fatal(err)
	}
	mi := metainfo.MetaInfo{InfoBytes: bencode.MustMarshal(info)}
	h := mi.HashInfoBytes()
	mi.AnnounceList = [][]string{{tt.announceURL(h)}}

	// A bound on liveness, not a timing claim: under -race on a loaded
	// 2-core host the steps took up to 30 s (make stress failed once at
	// 30 s). It stays under anacrolix's shortest re-announce interval (a
	// minute) counted from the first announce, so the check below that no
	// regular re-announce happened still holds.
	ctx, cancel := context.WithTimeout(context.Background(), 55*time.Second)
	defer cancel()
	var clients []*torrent.Client
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		for !cond() {
			select {
			case <-ctx.Done():
				// The clients' status names each tracker's last announce
				// and its error: a failed first announce is retried only
				// after a minute, which this test would not outwait.
				var b strings.Builder
				for _, cl := range clients {
					cl.WriteStatus(&b)
				}
				t.Fatalf("timed out waiting for %s; clients:\n%s", what, b.String())
			case <-time.After(20 * time.Millisecond):
			}
		}
	}
	swarmSize := func() int {
		c, err := tt.store.Scrape(ctx, time.Now(), [][20]byte{h})
		if err != nil {
			t.Fatal(err)
		}
		return c[0].Complete + c[0].Incomplete
	}

	seeder := newTorrentClient(t, seedDir)
	clients = append(clients, seeder)
	st, err := seeder.AddTorrent(&mi)
	if err != nil {
		t.Fatal(err)
	}
	<-st.GotInfo()
	if err := st.VerifyDataContext(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor("the seeder's first announce", func() bool { return swarmSize() == 1 })
	if st.BytesMissing() != 0 {
		t.Fatalf("seeder misses %d bytes", st.BytesMissing())
	}

	leecher := newTorrentClient(t, leechDir)
	clients = append(clients, leecher)
	lt, err := leecher.AddTorrent(&mi)
	if err != nil {
		t.Fatal(err)
	}
	<-lt.GotInfo()
	lt.DownloadAll()
	waitFor("the late joiner to download", func() bool { return lt.BytesMissing() == 0 })
	waitFor("the seeder to see the late joiner", func() bool { return len(st.PeerConns()) > 0 })

	// Read through the torrent: the file may still be a part file.
	rd := lt.NewReader()
	got, err := io.ReadAll(rd)
	rd.Close()
	if err != nil || string(got) != string(data) {
		t.Fatalf("downloaded data differs (%v)", err)
	}
	// Both clients announced exactly once with "started" and no regular
	// re-announce happened, so the seeder's knowledge of the late joiner came
	// from the connection, not from the tracker.
	m := scrapeMetrics(t, tt.base)
	if !strings.Contains(m, `shoal_tracker_announces_total{event="started"} 2`) || !strings.Contains(m, `event="none"} 0`) {
		t.Fatalf("unexpected announces:\n%s", grepLines(m, "shoal_tracker_announces_total"))
	}
}

func grepLines(s, sub string) string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, sub) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
