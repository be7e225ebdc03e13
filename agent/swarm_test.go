package agent

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	httpTrackerServer "github.com/anacrolix/torrent/tracker/http/server"
	trackerServer "github.com/anacrolix/torrent/tracker/server"
	"github.com/anacrolix/torrent/tracker/udp"

	"github.com/shoalproject/shoal/internal/testenv"
)

// memTracker is a minimal in-memory peer store behind anacrolix's HTTP
// tracker front end. Shoal's own tracker (tracker/) has no runnable command
// yet; this one stands in so the swarm path is tested end to end. It also
// records the group= each announce carried.
type memTracker struct {
	mu     sync.Mutex
	peers  map[trackerServer.InfoHash]map[netip.AddrPort]bool
	groups map[string]int
	hits   atomic.Int64
}

func (m *memTracker) TrackAnnounce(_ context.Context, req udp.AnnounceRequest, addr trackerServer.AnnounceAddr) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	ps := m.peers[req.InfoHash]
	if ps == nil {
		ps = map[netip.AddrPort]bool{}
		m.peers[req.InfoHash] = ps
	}
	if req.Event == 3 { // stopped
		delete(ps, addr)
	} else {
		ps[addr] = true
	}
	return nil
}

func (m *memTracker) Scrape(context.Context, []trackerServer.InfoHash) ([]udp.ScrapeInfohashResult, error) {
	return nil, nil
}

func (m *memTracker) GetPeers(_ context.Context, ih trackerServer.InfoHash, _ trackerServer.GetPeersOpts, remote trackerServer.AnnounceAddr) trackerServer.ServerAnnounceResult {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []trackerServer.PeerInfo
	for a := range m.peers[ih] {
		if a != remote {
			out = append(out, trackerServer.PeerInfo{AnnounceAddr: a})
		}
	}
	var res trackerServer.ServerAnnounceResult
	res.Peers = out
	res.Interval.Set(60)
	return res
}

func startMemTracker(t *testing.T) (*memTracker, string, func()) {
	t.Helper()
	m := &memTracker{peers: map[trackerServer.InfoHash]map[netip.AddrPort]bool{}, groups: map[string]int{}}
	h := httpTrackerServer.Handler{Announce: &trackerServer.AnnounceHandler{AnnounceTracker: m}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		m.hits.Add(1)
		m.mu.Lock()
		m.groups[r.URL.Query().Get("group")]++
		m.mu.Unlock()
		h.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	stop := func() { srv.Close() }
	t.Cleanup(stop)
	return m, "http://" + l.Addr().String() + "/announce", stop
}

// startShoalTracker runs `shoal tracker` (memory store) behind a recording
// reverse proxy, returning the announce URL and the groups announces carried.
func startShoalTracker(t *testing.T, secret string) (string, *sync.Map) {
	t.Helper()
	bin := testenv.ShoalBinary(t)
	addr := testenv.FreeAddr(t)
	path := filepath.Join(t.TempDir(), "tracker.yml")
	// Unsigned announces: every agent of these tests is node "test-node" on
	// 127.0.0.1, which a members-only tracker keeps as one peer.
	cfg := fmt.Sprintf("addr: %s\nsecrets: [%s]\nallowUnsigned: true\ninterval: 10s\nlog: {level: warn}\n", addr, secret)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "shoal-tracker", bin, []string{"tracker", "--config", path})
	testenv.WaitTCP(t, p, addr, 30*time.Second)
	u, _ := url.Parse("http://" + addr)
	rp := httputil.NewSingleHostReverseProxy(u)
	groups := &sync.Map{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		groups.Store(r.URL.Query().Get("group"), true)
		rp.ServeHTTP(w, r)
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return "http://" + l.Addr().String() + "/announce", groups
}

// startShoalRegistry runs `shoal registry` with the p2p middleware.
func startShoalRegistry(t *testing.T, trackerURL string, seederRate int64, seederDisabled bool) string {
	return startShoalRegistrySecret(t, trackerURL, testTrackerSecret, seederRate, seederDisabled)
}

func startShoalRegistrySecret(t *testing.T, trackerURL, trackerSecret string, seederRate int64, seederDisabled bool) string {
	t.Helper()
	bin := testenv.ShoalBinary(t)
	addr := testenv.FreeAddr(t)
	seedAddr := testenv.FreeAddr(t)
	dir := t.TempDir()
	cfg := fmt.Sprintf(`version: 0.1
log: {level: warn}
http:
  addr: %s
  secret: 9c1f0b7e5a3d42c8b6e1f07a2d9c4e3b8a7f6e5d4c3b2a1908f7e6d5c4b3a291
storage:
  filesystem: {rootdirectory: %s}
  redirect: {disable: false}
middleware:
  storage:
    - name: p2p
      options:
        piecelength: 1048576
        secret: ""
        urlexpiry: 5m
        tracker:
          url: %s
          secrets: [%s]
          tokenexpiry: 1h
        seeder:
          disabled: %v
          listen: %s
          ratelimit: %d
          idletimeout: 30m
        cluster: {secret: %s}
`, addr, filepath.Join(dir, "data"), trackerURL, trackerSecret, seederDisabled, seedAddr, seederRate, testClusterSecret)
	path := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "shoal-registry", bin, []string{"registry", "--config", path})
	testenv.WaitHTTP(t, p, "http://"+addr+"/v2/", 60*time.Second)
	return addr
}

func swarmConfig(t *testing.T, upstream string) Config {
	cfg := testConfig(t, upstream)
	cfg.Node.Groups = []string{"zone-a"}
	return cfg
}

// Two agents, `shoal registry` and `shoal tracker`: the second agent's bytes
// come from the first agent over BitTorrent, not from the registry.
func TestSwarmTwoAgents(t *testing.T) {
	trackerURL, groups := startShoalTracker(t, testTrackerSecret)
	reg := startShoalRegistrySecret(t, trackerURL, testTrackerSecret, 4<<20, false)
	img := pushRandom(t, reg, "lib/swarm", 16<<20, 1)
	d := layerDigests(t, img)[0]
	l, _ := img.LayerByDigest(d)
	size, _ := l.Size()
	proxy := startCountingProxy(t, reg)

	cfg1 := swarmConfig(t, proxy.addr)
	cfg1.P2P.DownloadBytesPerSec = 8 << 20
	a1 := startAgent(t, cfg1)
	a2 := startAgent(t, swarmConfig(t, proxy.addr))

	// Agent 1 downloads first, alone, from the registry (throttled to
	// 8 MiB/s by its own limit). Verified pieces are streamed as they
	// arrive: the first bytes reach the client long before the blob is
	// complete.
	t0 := time.Now()
	resp, err := http.Get("http://" + a1.mirror + "/v2/lib/swarm/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	first := make([]byte, 1)
	if _, err := io.ReadFull(resp.Body, first); err != nil {
		t.Fatal(err)
	}
	ttfb := time.Since(t0)
	h.Write(first)
	if _, err := io.Copy(h, resp.Body); err != nil {
		t.Fatalf("agent 1 body: %v", err)
	}
	resp.Body.Close()
	total := time.Since(t0)
	if got := "sha256:" + hex.EncodeToString(h.Sum(nil)); resp.StatusCode != 200 || got != d.String() {
		t.Fatalf("agent 1: %d %s", resp.StatusCode, got)
	}
	t.Logf("agent 1: first byte after %s, whole blob after %s", ttfb, total)
	if ttfb > total/2 {
		t.Errorf("first byte after %s of %s: blob not streamed while downloading", ttfb, total)
	}
	httpBefore := proxy.blobBytes.Load()
	// ...then agent 2, which finds agent 1 through the tracker. A Range
	// that ends early starts it: its bytes, from a complete node and not
	// checked on arrival, are checked before they are sent.
	rl, _ := img.LayerByDigest(d)
	rc, _ := rl.Compressed()
	whole, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	st, _, part := getBlob(t, a2.mirror, "lib/swarm", d, map[string]string{"Range": "bytes=1000-3000000"})
	if st != http.StatusPartialContent || !bytes.Equal(part, whole[1000:3000001]) {
		t.Fatalf("agent 2 Range: %d, %d bytes, equal=%v", st, len(part), bytes.Equal(part, whole[1000:3000001]))
	}
	start := time.Now()
	if st, sum, _ := getBlob(t, a2.mirror, "lib/swarm", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("agent 2: %d %s", st, sum)
	}
	t.Logf("agent 2 pulled %d bytes in %s", size, time.Since(start))
	peers2 := metric(t, a2.mirror, `shoal_agent_blob_bytes_total{source="peer"}`)
	reg2 := metric(t, a2.mirror, `shoal_agent_blob_bytes_total{source="registry"}`)
	up1 := metric(t, a1.mirror, "shoal_agent_uploaded_bytes_total")
	httpDuring := proxy.blobBytes.Load() - httpBefore
	t.Logf("agent2: peers=%v registry=%v; agent1 uploaded=%v; registry HTTP blob bytes during agent 2 = %d", peers2, reg2, up1, httpDuring)
	// The Range's pieces (0-2 of 1 MiB) wait at most 250 ms for agent 2's
	// swarm to form before they come from the registry (a reader does not
	// wait on the swarm): on a loaded host agent 2 may not have reached
	// agent 1 by then. Every other piece comes from agent 1.
	rangeReg := metric(t, a2.mirror, `shoal_agent_registry_piece_bytes_total{reason="range"}`)
	if rangeReg > 3<<20 {
		t.Errorf("agent 2 took %v bytes from the registry for its Range, more than the range's 3 pieces", rangeReg)
	}
	if peers2 < 0.9*(float64(size)-rangeReg) {
		t.Errorf("agent 2 got %v bytes from peers, want >= 90%% of %d less the %v its Range took from the registry", peers2, size, rangeReg)
	}
	if up1 < 0.5*float64(size) {
		t.Errorf("agent 1 uploaded %v bytes, want most of %d (agent 2 should pull from it, not the registry)", up1, size)
	}
	if httpDuring > size/10 {
		t.Errorf("registry served %d HTTP blob bytes during agent 2's pull", httpDuring)
	}
	if _, ok := groups.Load("zone-a"); !ok {
		t.Errorf("no announce carried group=zone-a")
	}

	// Agent 1 restarts with its cache and seeds again: a third agent, with
	// agent 2 gone, gets most bytes from the restarted agent 1.
	a2.stop()
	a1.stop()
	cfg1b := a1.cfg
	cfg1b.Mirror.Addr, cfg1b.Control.Addr = testenv.FreeAddr(t), testenv.FreeAddr(t)
	a1b := startAgent(t, cfg1b)
	// It seeds again once it hashed the blob (in the background).
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if a1b.fetch.Seeding(d.Hex) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("restarted agent 1 does not seed the cached blob again")
		}
	}
	a3 := startAgent(t, swarmConfig(t, proxy.addr))
	if st, sum, _ := getBlob(t, a3.mirror, "lib/swarm", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("agent 3: %d %s", st, sum)
	}
	up1b := metric(t, a1b.mirror, "shoal_agent_uploaded_bytes_total")
	peers3 := metric(t, a3.mirror, `shoal_agent_blob_bytes_total{source="peer"}`)
	t.Logf("agent3: peers=%v; restarted agent1 uploaded=%v", peers3, up1b)
	if up1b < 0.5*float64(size) {
		t.Errorf("restarted agent 1 uploaded %v bytes, want most of %d (re-seeding after restart)", up1b, size)
	}
}

// Tracker down, so no peer can be found: the agent waits briefly for the
// swarm, then takes every piece from the registry; nothing fails.
func TestSwarmFallbackTrackerDown(t *testing.T) {
	_, trackerURL, stopTracker := startMemTracker(t)
	reg := startShoalRegistry(t, trackerURL, 0, false)
	stopTracker()
	img := pushRandom(t, reg, "lib/fb", 4<<20, 2)
	ag := startAgent(t, swarmConfig(t, reg))
	start := time.Now()
	for _, d := range layerDigests(t, img) {
		if st, sum, _ := getBlob(t, ag.mirror, "lib/fb", d, nil); st != 200 || sum != d.String() {
			t.Fatalf("pull with tracker down: %d %s", st, sum)
		}
	}
	t.Logf("pulled in %s", time.Since(start))
	// Alone, the agent's share is every piece: it takes them from the
	// registry with Range requests and never stalls.
	if v := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="solo"}`) +
		metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="stall"}`); v != 0 {
		t.Errorf("%v solo/stall fallbacks, want none", v)
	}
	if v := metric(t, ag.mirror, `shoal_agent_blob_bytes_total{source="registry"}`); v < 4<<20 {
		t.Errorf("registry bytes %v: the data had to come from the registry", v)
	}
	if !strings.Contains(trackerURL, "/announce") {
		t.Fatal("bad tracker url")
	}
}
