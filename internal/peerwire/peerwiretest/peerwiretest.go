// Package peerwiretest starts BitTorrent clients for tests of the closed
// peer wire: a bare one (plain TCP, no certificate — what anyone on the node
// network can run) or a member of a cluster.
package peerwiretest

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/peerwire"
)

// Client starts an anacrolix client on loopback that stops with the test.
// Without secrets it is a bare client: plain TCP, no TLS, no certificate.
// With secrets it is a member of their cluster, wired like Shoal's own.
func Client(t testing.TB, secrets ...string) *torrent.Client {
	t.Helper()
	cfg := torrent.NewDefaultClientConfig()
	cfg.DisableUTP, cfg.NoDHT, cfg.DisableWebseeds, cfg.DisableTrackers = true, true, true, true
	cfg.DisableIPv6 = true
	cfg.NoDefaultPortForwarding = true
	cfg.DataDir = t.TempDir()
	cfg.ListenHost = func(string) string { return "127.0.0.1" }
	cfg.ListenPort = 0
	cfg.Slogger = slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg.Seed = true // a complete torrent is served, not only downloaded
	if len(secrets) > 0 {
		peerwire.Configure(cfg)
	}
	cl, err := torrent.NewClient(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(secrets) == 0 {
		t.Cleanup(func() { cl.Close() })
	} else {
		a, err := cluster.NewAuthority(secrets...)
		if err != nil {
			cl.Close()
			t.Fatal(err)
		}
		id, err := a.Issue("test-client", nil)
		if err != nil {
			t.Fatal(err)
		}
		w, err := peerwire.Attach(cl, "tcp4", "127.0.0.1:0", a, id)
		if err != nil {
			t.Fatal(err)
		}
		// The client first: its accept loop ends when it is closed, and
		// spins on a closed listener until then.
		t.Cleanup(func() { cl.Close(); w.Close() })
	}
	return cl
}

// Fetch adds the torrent to cl with peer (host:port) as its only source
// (trackers and web seeds stripped) and wants every piece. It returns the
// blob once complete, or nil when wait passes first, and the piece-data
// bytes that arrived over the wire (checked or not).
func Fetch(t testing.TB, cl *torrent.Client, mi *metainfo.MetaInfo, peer string, wait time.Duration) ([]byte, int64) {
	t.Helper()
	m := *mi
	m.UrlList, m.Announce, m.AnnounceList = nil, "", nil
	spec, err := torrent.TorrentSpecFromMetaInfoErr(&m)
	if err != nil {
		t.Fatal(err)
	}
	spec.Storage = storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: t.TempDir(), PieceCompletion: storage.NewMapPieceCompletion()})
	tor, _, err := cl.AddTorrentSpec(spec)
	if err != nil {
		t.Fatal(err)
	}
	tor.AddPeers([]torrent.PeerInfo{{Addr: torrent.StringAddr(peer), Trusted: true}})
	tor.DownloadAll()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	select {
	case <-tor.Complete().On():
	case <-ctx.Done():
		st := tor.Stats()
		return nil, st.BytesReadData.Int64()
	}
	rd := tor.NewReader()
	defer rd.Close()
	b, err := io.ReadAll(rd)
	if err != nil {
		t.Fatal(err)
	}
	st := tor.Stats()
	return b, st.BytesReadData.Int64()
}
