package agent

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"io"
	"net"
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoalproject/shoal/agent/internal/peer"
	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/peerwire/peerwiretest"
	"github.com/shoalproject/shoal/internal/secret"
)

// Finding 4 of issue 11: a bare BitTorrent client given a blob's real
// .torrent and a node's peer port downloaded the whole private blob. Now
// the node's peer wire and data listener are mutual TLS with cluster
// certificates: a stranger — bare, or of another cluster — gets no byte
// from either, while a member still does (the control that shows the
// attack setup works).
func TestPeerWireClosedToStrangers(t *testing.T) {
	trackerURL, _ := startShoalTracker(t, testTrackerSecret)
	// No seeder: the node is the blob's only holder on the wire.
	reg := startShoalRegistrySecret(t, trackerURL, testTrackerSecret, 0, true)
	img := pushRandom(t, reg, "lib/closed", 2<<20, 1)
	d := layerDigests(t, img)[0]
	a := startAgent(t, swarmConfig(t, reg))
	st, sum, blob := getBlob(t, a.mirror, "lib/closed", d, nil)
	if st != 200 || sum != d.String() {
		t.Fatalf("pull through the agent: %d %s", st, sum)
	}
	mi := torrentOf(t, reg, "lib/closed", d.String())
	wireAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(a.PeerPort()))
	data := a.p2p.DataAddr().String()

	t.Run("data listener", func(t *testing.T) {
		ih := mi.HashInfoBytes()
		target := "https://" + data + peer.DataPathPrefix + ih.HexString()
		get := func(c *http.Client, url string) (int, []byte, error) {
			req, _ := http.NewRequest(http.MethodGet, url, nil)
			req.Header.Set("Range", "bytes=0-65535")
			resp, err := c.Do(req)
			if err != nil {
				return 0, nil, err
			}
			defer resp.Body.Close()
			b, _ := io.ReadAll(resp.Body)
			return resp.StatusCode, b, nil
		}
		noCert := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
		if st, b, err := get(noCert, target); err == nil {
			t.Fatalf("HTTPS without a certificate answered %d (%d bytes)", st, len(b))
		}
		if st, b, err := get(&http.Client{Timeout: 5 * time.Second}, "http://"+data+peer.DataPathPrefix+ih.HexString()); err == nil && (st/100 == 2 || bytes.Contains(b, blob[:64])) {
			t.Fatalf("plain HTTP answered %d with %d bytes", st, len(b))
		}
		other, err := cluster.NewAuthority(secret.Generate())
		if err != nil {
			t.Fatal(err)
		}
		oid, _ := other.Issue("intruder", nil)
		otherCl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: other.ClientTLS(oid, nil)}}
		if st, b, err := get(otherCl, target); err == nil {
			t.Fatalf("a member of another cluster was answered %d (%d bytes)", st, len(b))
		}
		// A member that is not a BitTorrent peer of the torrent passes
		// TLS and is still refused (defense in depth), with the answer an
		// unknown torrent gets.
		mid, _ := a.authority.Issue("member", nil)
		memberCl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: a.authority.ClientTLS(mid, nil)}}
		if st, _, err := get(memberCl, target); err != nil || st != http.StatusNotFound {
			t.Fatalf("a member that is no peer of the torrent: %d, %v; want 404", st, err)
		}
	})

	for name, secrets := range map[string][]string{"bare client": nil, "other cluster": {secret.Generate()}} {
		t.Run(name, func(t *testing.T) {
			got, n := peerwiretest.Fetch(t, peerwiretest.Client(t, secrets...), mi, wireAddr, 5*time.Second)
			if got != nil || n != 0 {
				t.Fatalf("%d bytes of piece data from the node's peer port", n)
			}
		})
	}
	t.Run("member", func(t *testing.T) {
		got, _ := peerwiretest.Fetch(t, peerwiretest.Client(t, testClusterSecret), mi, wireAddr, 30*time.Second)
		if sum := sha256.Sum256(got); "sha256:"+hex.EncodeToString(sum[:]) != d.String() {
			t.Fatalf("a member did not get the blob from the node (%d bytes)", len(got))
		}
	})
}

// torrentOf asks the registry for a blob's .torrent as an agent does.
func torrentOf(t *testing.T, reg, repo, dgst string) *metainfo.MetaInfo {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, "http://"+reg+"/v2/"+repo+"/blobs/"+dgst, nil)
	req.Header.Set("Accept", "application/x-bittorrent")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("torrent of %s: %d", dgst, resp.StatusCode)
	}
	mi, err := metainfo.Load(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return mi
}
