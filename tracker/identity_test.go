package tracker

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"

	"github.com/shoalproject/shoal/internal/token"
)

// announceFrom announces over HTTP from source IP src (any 127/8 address
// works on Linux loopback) and returns the handed-out peers as "ip:port" →
// peer id.
func announceFrom(t *testing.T, src, base string, h [20]byte, id [20]byte, port int, event, tok string) map[string]string {
	t.Helper()
	d := &net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}, Timeout: 5 * time.Second}
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		DialContext:       func(ctx context.Context, n, a string) (net.Conn, error) { return d.DialContext(ctx, n, a) },
		DisableKeepAlives: true,
	}}
	q := url.Values{
		"info_hash": {string(h[:])}, "peer_id": {string(id[:])}, "port": {strconv.Itoa(port)},
		"left": {"0"}, "compact": {"0"}, "numwant": {"50"}, "token": {tok},
	}
	if event != "" {
		q.Set("event", event)
	}
	resp, err := cl.Get(base + "/announce?" + q.Encode())
	if err != nil {
		t.Fatalf("announce from %s: %v", src, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var r struct {
		Failure string `bencode:"failure reason"`
		Peers   []struct {
			ID   string `bencode:"peer id"`
			IP   string `bencode:"ip"`
			Port int    `bencode:"port"`
		} `bencode:"peers"`
	}
	if err := bencode.Unmarshal(body, &r); err != nil || r.Failure != "" {
		t.Fatalf("announce from %s: %q %v", src, body, err)
	}
	out := map[string]string{}
	for _, p := range r.Peers {
		out[net.JoinHostPort(p.IP, strconv.Itoa(p.Port))] = p.ID
	}
	return out
}

// TestForgedPeerIDCannotDisplace is the attack of issue 11: a holder of a
// valid announce token, on another address, announces a node's peer_id
// (peer ids are public: every peer sees them in handshakes and non-compact
// responses) to point the node's entry at itself, then sends "stopped" to
// drop the node from the swarm. Neither may touch the node's entry.
func TestForgedPeerIDCannotDisplace(t *testing.T) {
	tt := memTracker(t, testConfig())
	h := ih(77)
	tok := tt.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))
	victimID, observerID := pid(1), pid(2)
	announceFrom(t, "127.0.0.1", tt.base, h, victimID, 6001, "started", tok)

	// The attacker re-points the victim's id to its own port, then stops it.
	announceFrom(t, "127.0.0.2", tt.base, h, victimID, 6666, "started", tok)
	got := announceFrom(t, "127.0.0.3", tt.base, h, observerID, 6003, "started", tok)
	if got["127.0.0.1:6001"] != string(victimID[:]) {
		t.Fatalf("after the forged announce the victim's entry is gone or changed: %q", got)
	}
	// The attacker's announce is an entry of its own address, nothing more.
	if len(got) != 2 || got["127.0.0.2:6666"] == "" {
		t.Fatalf("handed out %q, want the victim and the forger's own entry", got)
	}
	announceFrom(t, "127.0.0.2", tt.base, h, victimID, 6001, "stopped", tok)
	got = announceFrom(t, "127.0.0.3", tt.base, h, observerID, 6003, "", tok)
	if got["127.0.0.1:6001"] != string(victimID[:]) || len(got) != 1 {
		t.Fatalf("after the forged stop: %q, want the victim alone", got)
	}

	// The owner, from its own address, still controls its entry.
	announceFrom(t, "127.0.0.1", tt.base, h, victimID, 6011, "", tok)
	got = announceFrom(t, "127.0.0.3", tt.base, h, observerID, 6003, "", tok)
	if _, ok := got["127.0.0.1:6011"]; !ok || len(got) != 1 {
		t.Fatalf("owner's port change: %q", got)
	}
	announceFrom(t, "127.0.0.1", tt.base, h, victimID, 6011, "stopped", tok)
	if got = announceFrom(t, "127.0.0.3", tt.base, h, observerID, 6003, "", tok); len(got) != 0 {
		t.Fatalf("owner's stop: %q", got)
	}
}
