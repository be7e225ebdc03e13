package peerwire_test

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/anacrolix/torrent"
	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	"github.com/anacrolix/torrent/storage"

	"github.com/shoalproject/shoal/internal/peerwire/peerwiretest"
	"github.com/shoalproject/shoal/internal/secret"
)

// seed starts a member client seeding size random bytes and returns the
// torrent, the data and the client's peer address.
func seed(t *testing.T, size int, secrets ...string) (*metainfo.MetaInfo, []byte, string) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "blob"), data, 0o600); err != nil {
		t.Fatal(err)
	}
	info := metainfo.Info{Name: "blob", Length: int64(size), PieceLength: 1 << 16}
	if err := info.GeneratePieces(func(metainfo.FileInfo) (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(data)), nil
	}); err != nil {
		t.Fatal(err)
	}
	mi := &metainfo.MetaInfo{InfoBytes: bencode.MustMarshal(info)}
	cl := peerwiretest.Client(t, secrets...)
	tor, _ := cl.AddTorrentOpt(metainfoOpts(mi, dir))
	if err := tor.VerifyData(); err != nil {
		t.Fatal(err)
	}
	// VerifyData returns once the pieces are hashed; the torrent's
	// completion flag follows asynchronously.
	select {
	case <-tor.Complete().On():
	case <-time.After(10 * time.Second):
		t.Fatal("seed is not complete")
	}
	return mi, data, net.JoinHostPort("127.0.0.1", strconv.Itoa(cl.LocalPort()))
}

// The wire carries a blob between members of one cluster, and not a byte to
// a bare client or to a member of another cluster — in either direction.
func TestPeerWireMembersOnly(t *testing.T) {
	s := secret.Generate()
	mi, data, addr := seed(t, 1<<20, s)

	got, _ := peerwiretest.Fetch(t, peerwiretest.Client(t, s), mi, addr, 30*time.Second)
	if !bytes.Equal(got, data) {
		t.Fatal("a member did not get the blob from a member")
	}
	for name, cl := range map[string][]string{"bare client": nil, "other cluster": {secret.Generate()}} {
		t.Run(name, func(t *testing.T) {
			got, n := peerwiretest.Fetch(t, peerwiretest.Client(t, cl...), mi, addr, 3*time.Second)
			if got != nil || n != 0 {
				t.Fatalf("got %d bytes of piece data from a member", n)
			}
		})
	}

	// A member dials only members: a bare seeder is never served to it
	// (nor reached by it).
	mi2, _, bare := seed(t, 1<<18)
	if got, n := peerwiretest.Fetch(t, peerwiretest.Client(t, s), mi2, bare, 3*time.Second); got != nil || n != 0 {
		t.Fatalf("a member took %d bytes from a bare client", n)
	}
}

// A member's listener answers nothing but a TLS handshake, which needs a
// certificate of the cluster: a plain BitTorrent handshake gets no byte.
func TestPeerWirePlainHandshakeGetsNothing(t *testing.T) {
	s := secret.Generate()
	mi, _, addr := seed(t, 1<<16, s)
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ih := mi.HashInfoBytes()
	hs := append([]byte("\x13BitTorrent protocol\x00\x00\x00\x00\x00\x10\x00\x05"), ih[:]...)
	hs = append(hs, []byte("-XX0000-attacker0000")...)
	c.Write(hs)
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	b := make([]byte, 256)
	n, _ := c.Read(b)
	// What may come back is a TLS alert (the handshake record is not
	// TLS); never the BitTorrent handshake with the infohash.
	if n > 0 && (bytes.Contains(b[:n], []byte("BitTorrent protocol")) || bytes.Contains(b[:n], ih[:])) {
		t.Fatalf("a plain handshake got a BitTorrent answer: %q", b[:n])
	}

	// TLS without a certificate: refused in the handshake.
	tc, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13})
	if err == nil {
		tc.SetReadDeadline(time.Now().Add(3 * time.Second))
		tc.Write(hs)
		_, err = tc.Read(b)
		tc.Close()
	}
	if err == nil {
		t.Fatal("a TLS client without a certificate was answered")
	}
}

func metainfoOpts(mi *metainfo.MetaInfo, dir string) torrent.AddTorrentOpts {
	return torrent.AddTorrentOpts{
		InfoHash:  mi.HashInfoBytes(),
		InfoBytes: mi.InfoBytes,
		Storage:   storage.NewFileOpts(storage.NewFileClientOpts{ClientBaseDir: dir, PieceCompletion: storage.NewMapPieceCompletion()}),
	}
}
