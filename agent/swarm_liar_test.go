package agent

import (
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	pp "github.com/anacrolix/torrent/peer_protocol"
	"github.com/anacrolix/torrent/storage"

	"github.com/shoalproject/shoal/agent/internal/peer"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/peerwire"
)

// liarStorage claims every piece and holds none.
type liarStorage struct{}

func (liarStorage) OpenTorrent(context.Context, *metainfo.Info, metainfo.Hash) (storage.TorrentImpl, error) {
	return storage.TorrentImpl{Piece: func(metainfo.Piece) storage.PieceImpl { return liarPiece{} }}, nil
}

type liarPiece struct{}

func (liarPiece) ReadAt(b []byte, _ int64) (int, error)  { return 0, io.ErrUnexpectedEOF }
func (liarPiece) WriteAt(b []byte, _ int64) (int, error) { return len(b), nil }
func (liarPiece) MarkComplete() error                    { return nil }
func (liarPiece) MarkNotComplete() error                 { return nil }
func (liarPiece) Completion() storage.Completion {
	return storage.Completion{Ok: true, Complete: true}
}

// A BitTorrent peer that advertises every piece of the blob and sends none
// — with no data port, or with one that accepts requests and never
// answers — holds the download no longer than the stall watch allows: the
// blob arrives from the registry within a few stall timeouts.
func TestLyingPeerCannotHoldBlob(t *testing.T) {
	for _, withPort := range []bool{false, true} {
		name := "no data port"
		if withPort {
			name = "data port that never answers"
		}
		t.Run(name, func(t *testing.T) {
			_, announce, _ := startMemTracker(t)
			up := startScripted(t)
			data := randomBytes(4 << 20)
			d := up.add(data)
			info := metainfo.Info{Name: d.Hex, Length: int64(len(data)), PieceLength: 256 << 10}
			priv := true
			info.Private = &priv
			if err := info.GeneratePieces(func(metainfo.FileInfo) (io.ReadCloser, error) {
				return io.NopCloser(bytes.NewReader(data)), nil
			}); err != nil {
				t.Fatal(err)
			}
			up.mu.Lock()
			up.torrents[d.Hex] = info
			up.mu.Unlock()
			up.announce = announce

			hang, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer hang.Close()
			go func() {
				for {
					c, err := hang.Accept()
					if err != nil {
						return
					}
					defer c.Close() // held open, never answered
				}
			}()

			lc := torrent.NewDefaultClientConfig()
			lc.DisableUTP, lc.NoDHT, lc.NoDefaultPortForwarding, lc.DisableWebtorrent, lc.DisableWebseeds = true, true, true, true, true
			lc.DisableIPv6 = true
			lc.Seed = true
			// A member of the cluster (the peer wire serves nobody else):
			// a node gone bad, not a stranger.
			peerwire.Configure(lc)
			lc.DefaultStorage = liarStorage{}
			lc.DataDir = t.TempDir()
			if withPort {
				lc.Callbacks.PeerConnAdded = append(lc.Callbacks.PeerConnAdded, func(pc *torrent.PeerConn) {
					pc.LocalLtepProtocolMap.AddUserProtocol(peer.Extension)
				})
				lc.Callbacks.ReadExtendedHandshake = func(pc *torrent.PeerConn, _ *pp.ExtendedHandshakeMessage) {
					go peer.SendExtension(pc, peer.EncodeDataPort(hang.Addr().(*net.TCPAddr).Port))
				}
			}
			liar, err := torrent.NewClient(lc)
			if err != nil {
				t.Fatal(err)
			}
			auth, err := cluster.NewAuthority(testClusterSecret)
			if err != nil {
				t.Fatal(err)
			}
			id, err := auth.Issue("liar", nil)
			if err != nil {
				t.Fatal(err)
			}
			wire, err := peerwire.Attach(liar, "tcp4", "127.0.0.1:0", auth, id)
			if err != nil {
				liar.Close()
				t.Fatal(err)
			}
			// The client before its listener: anacrolix's accept loop
			// spins on a closed listener.
			defer func() { liar.Close(); wire.Close() }()
			mi := metainfo.MetaInfo{InfoBytes: bencode.MustMarshal(info), Announce: announce}
			lt, err := liar.AddTorrent(&mi)
			if err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(10 * time.Second)
			for lt.BytesMissing() != 0 {
				if time.Now().After(deadline) {
					t.Fatal("the liar does not claim the blob")
				}
				time.Sleep(10 * time.Millisecond)
			}
			time.Sleep(200 * time.Millisecond) // its announce reached the tracker

			cfg := testConfig(t, up.host)
			cfg.P2P.StallTimeout = time.Second
			ag := startAgent(t, cfg)
			start := time.Now()
			st, sum, _, err := tryGet(ag.mirror, "lib/x", d, nil)
			if err != nil || st != 200 || sum != d.String() {
				t.Fatalf("pull: %d %s %v", st, sum, err)
			}
			took := time.Since(start)
			t.Logf("pulled in %s", took)
			if took > 8*time.Second {
				t.Errorf("the liar held the blob for %s, with a stall timeout of 1 s", took)
			}
			// The liar was in the swarm: the agent did not find the blob
			// there and took every piece from the registry once the
			// stall bound passed (without it, a lone agent takes every
			// piece from the registry "alone" and never stalls).
			if v := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="solo"}`); v != 1 {
				t.Errorf("solo fallbacks = %v, want 1 (did the agent meet the liar?)", v)
			}
		})
	}
}
