package tracker

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	anatracker "github.com/anacrolix/torrent/tracker"
	httpTracker "github.com/anacrolix/torrent/tracker/http"
	"github.com/anacrolix/torrent/types/infohash"
	"github.com/prometheus/client_golang/prometheus"
	"go.yaml.in/yaml/v3"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/metrics/metricstest"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/internal/token"
)

var testSecret = secret.Generate()

type testTracker struct {
	*Server
	base string
	keys *token.Keys
	mu   sync.Mutex
	at   time.Time // fake clock; zero means real time
}

func (tt *testTracker) setNow(t time.Time) {
	tt.mu.Lock()
	tt.at = t
	tt.mu.Unlock()
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.Secrets = config.NewTokens(testSecret)
	// Most tests drive the tracker with anacrolix's client, unsigned;
	// members_test.go covers signed announces.
	cfg.AllowUnsigned = true
	return cfg
}

// startTracker serves a tracker over store (nil: the one cfg describes) on a
// loopback listener.
func startTracker(t *testing.T, cfg Config, store Store, network, addr string) *testTracker {
	t.Helper()
	s, err := New(cfg, Deps{Store: store})
	if err != nil {
		t.Fatal(err)
	}
	tt := &testTracker{Server: s}
	s.now = func() time.Time {
		tt.mu.Lock()
		defer tt.mu.Unlock()
		if tt.at.IsZero() {
			return time.Now()
		}
		return tt.at
	}
	tt.keys, _ = token.NewKeys(cfg.Secrets.Values()...)
	l, err := net.Listen(network, addr)
	if err != nil {
		t.Skipf("listen %s %s: %v", network, addr, err)
	}
	serveInBackground(t, s, l)
	tt.base = "http://" + l.Addr().String()
	return tt
}

// serveInBackground runs s.Serve on l until stop is called or the test
// ends, and fails the test if Serve returns an error.
func serveInBackground(t *testing.T, s *Server, l net.Listener) (stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("serve: %v", err)
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

func memTracker(t *testing.T, cfg Config) *testTracker {
	return startTracker(t, cfg, NewMemoryStore(time.Hour), "tcp", "127.0.0.1:0")
}

func (tt *testTracker) announceURL(h [20]byte) string {
	return tt.base + "/announce?token=" + tt.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))
}

// clientAnnounce announces with anacrolix's tracker client, as agents do.
func clientAnnounce(t *testing.T, announceURL string, req anatracker.AnnounceRequest) (anatracker.AnnounceResponse, error) {
	t.Helper()
	cl, err := anatracker.NewClient(announceURL, anatracker.NewClientOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Announce(ctx, req, anatracker.AnnounceOpt{})
}

func mustAnnounce(t *testing.T, announceURL string, req anatracker.AnnounceRequest) anatracker.AnnounceResponse {
	t.Helper()
	resp, err := clientAnnounce(t, announceURL, req)
	if err != nil {
		t.Fatalf("announce: %v", err)
	}
	return resp
}

func req(h [20]byte, n int, left int64, ev anatracker.AnnounceEvent) anatracker.AnnounceRequest {
	return anatracker.AnnounceRequest{InfoHash: h, PeerId: pid(n), Port: uint16(6000 + n), Left: left, Event: ev}
}

// rawGet fetches a tracker URL and decodes the bencoded dictionary.
func rawGet(t *testing.T, u string) map[string]any {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %s %q", u, resp.Status, b)
	}
	var m map[string]any
	if err := bencode.Unmarshal(b, &m); err != nil {
		t.Fatalf("GET %s: body %q is not a bencoded dict: %v", u, b, err)
	}
	return m
}

func addrsOf(ps []httpTracker.Peer) map[string]bool {
	m := map[string]bool{}
	for _, p := range ps {
		m[net.JoinHostPort(p.IP.String(), strconv.Itoa(p.Port))] = true
	}
	return m
}

func TestAnnounceScrapeRoundTrip(t *testing.T) {
	for name, mk := range storeFactories() {
		t.Run(name, func(t *testing.T) {
			tt := startTracker(t, testConfig(), mk(t), "tcp", "127.0.0.1:0")
			h := ih(1)
			u := tt.announceURL(h)
			r1 := mustAnnounce(t, u, req(h, 1, 100, anatracker.Started))
			if len(r1.Peers) != 0 || r1.Leechers != 1 || r1.Interval != 10 {
				t.Fatalf("first announce: %+v", r1)
			}
			r2 := mustAnnounce(t, u, req(h, 2, 0, anatracker.Started))
			if got := addrsOf(r2.Peers); len(got) != 1 || !got["127.0.0.1:6001"] {
				t.Fatalf("second announce peers = %v", got)
			}
			if r2.Seeders != 1 || r2.Leechers != 1 {
				t.Fatalf("counts %+v", r2)
			}
			cl, err := anatracker.NewClient(u, anatracker.NewClientOpts{})
			if err != nil {
				t.Fatal(err)
			}
			defer cl.Close()
			sr, err := cl.Scrape(context.Background(), []infohash.T{h})
			if err != nil {
				t.Fatal(err)
			}
			if len(sr) != 1 || sr[0].Seeders != 1 || sr[0].Leechers != 1 {
				t.Fatalf("scrape = %+v", sr)
			}
		})
	}
}

func TestNonCompact(t *testing.T) {
	tt := memTracker(t, testConfig())
	h := ih(2)
	mustAnnounce(t, tt.announceURL(h), req(h, 1, 0, anatracker.Started))
	v := url.Values{}
	v.Set("info_hash", string(h[:]))
	id := pid(2)
	v.Set("peer_id", string(id[:]))
	v.Set("port", "6002")
	v.Set("compact", "0")
	resp, err := http.Get(tt.announceURL(h) + "&" + v.Encode())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var hr httpTracker.HttpResponse
	if err := bencode.Unmarshal(b, &hr); err != nil {
		t.Fatalf("%q: %v", b, err)
	}
	if hr.Peers.Compact || len(hr.Peers.List) != 1 {
		t.Fatalf("want one dictionary peer, got %+v from %q", hr.Peers, b)
	}
	p := hr.Peers.List[0]
	want := pid(1)
	if p.IP.String() != "127.0.0.1" || p.Port != 6001 || string(p.ID) != string(want[:]) {
		t.Fatalf("peer = %+v", p)
	}
}

func TestIPv6(t *testing.T) {
	tt := startTracker(t, testConfig(), NewMemoryStore(time.Hour), "tcp6", "[::1]:0")
	h := ih(3)
	u := tt.announceURL(h)
	mustAnnounce(t, u, req(h, 1, 0, anatracker.Started))
	r := mustAnnounce(t, u, req(h, 2, 10, anatracker.Started))
	if got := addrsOf(r.Peers); len(got) != 1 || !got["[::1]:6001"] {
		t.Fatalf("peers over IPv6 = %v", got)
	}
	// The compact form must use BEP 7's peers6, not peers.
	m := rawGet(t, u+"&"+url.Values{"info_hash": {string(h[:])}, "peer_id": {"-SH0001-000000000003"}, "port": {"6003"}}.Encode())
	if p6, _ := m["peers6"].(string); len(p6) != 36 {
		t.Fatalf("peers6 = %q", m["peers6"])
	}
}

func TestExpiryStoppedCompleted(t *testing.T) {
	cfg := testConfig()
	cfg.PeerTTL = time.Minute
	tt := memTracker(t, cfg)
	h := ih(4)
	u := tt.announceURL(h)
	t0 := time.Now()
	tt.setNow(t0)
	mustAnnounce(t, u, req(h, 1, 10, anatracker.Started))
	mustAnnounce(t, u, req(h, 2, 10, anatracker.Started))
	// completed moves peer 2 to seeders.
	r := mustAnnounce(t, u, req(h, 2, 0, anatracker.Completed))
	if r.Seeders != 1 || r.Leechers != 1 {
		t.Fatalf("after completed: %+v", r)
	}
	// stopped removes peer 2 at once.
	mustAnnounce(t, u, req(h, 2, 0, anatracker.Stopped))
	r = mustAnnounce(t, u, req(h, 3, 10, anatracker.Started))
	if got := addrsOf(r.Peers); len(got) != 1 || !got["127.0.0.1:6001"] {
		t.Fatalf("after stopped, peers = %v", got)
	}
	// peer 1 stops announcing and expires after the TTL; peer 3 refreshes.
	tt.setNow(t0.Add(40 * time.Second))
	mustAnnounce(t, u, req(h, 3, 10, anatracker.None))
	tt.setNow(t0.Add(61 * time.Second))
	r = mustAnnounce(t, u, req(h, 4, 10, anatracker.Started))
	if got := addrsOf(r.Peers); len(got) != 1 || !got["127.0.0.1:6003"] {
		t.Fatalf("after TTL, peers = %v", got)
	}
	cl, _ := anatracker.NewClient(u, anatracker.NewClientOpts{})
	defer cl.Close()
	sr, err := cl.Scrape(context.Background(), []infohash.T{h})
	if err != nil || sr[0].Completed != 1 || sr[0].Leechers != 2 || sr[0].Seeders != 0 {
		t.Fatalf("scrape = %+v, %v", sr, err)
	}
}

func TestHandOutPolicyAndNumwant(t *testing.T) {
	cfg := testConfig()
	cfg.MaxNumwant = 10
	cfg.DefaultNumwant = 5
	// With 3 seeders the swarm counts as grown: the origin takes its rank
	// after them (members_test.go covers young swarms).
	cfg.YoungSwarmSeeders = 3
	tt := memTracker(t, cfg)
	h := ih(5)
	u := tt.announceURL(h)
	originURL := tt.base + "/announce?token=" + tt.keys.Sign(token.PurposeOrigin, h[:], time.Now().Add(time.Hour))
	// 1 origin (left>0 on purpose: the token, not left, makes the origin),
	// 3 seeders, 20 leechers of which 2 in group "a".
	mustAnnounce(t, originURL, req(h, 100, 5, anatracker.Started))
	for i := 1; i <= 3; i++ {
		mustAnnounce(t, u, req(h, i, 0, anatracker.Started))
	}
	for i := 10; i < 30; i++ {
		uu := u
		if i < 12 {
			uu += "&group=a"
		}
		mustAnnounce(t, uu, req(h, i, 10, anatracker.Started))
	}
	get := func(numwant string, group string, n int) []string {
		q := url.Values{"info_hash": {string(h[:])}, "peer_id": {string(func() []byte { p := pid(n); return p[:] }())}, "port": {strconv.Itoa(6000 + n)}, "left": {"10"}}
		if numwant != "" {
			q.Set("numwant", numwant)
		}
		if group != "" {
			q.Set("group", group)
		}
		m := rawGet(t, u+"&"+q.Encode())
		if fr, ok := m["failure reason"]; ok {
			t.Fatalf("failure: %v", fr)
		}
		ps, _ := m["peers"].(string)
		var out []string
		for i := 0; i+6 <= len(ps); i += 6 {
			out = append(out, strconv.Itoa(int(ps[i+4])<<8|int(ps[i+5])))
		}
		return out
	}
	// The requester (peer 10, group a) never gets itself; order is
	// seeders, origin, then its group's leecher (11), then other leechers.
	got := get("1000", "a", 10)
	if len(got) != 10 {
		t.Fatalf("numwant 1000 with cap 10 returned %d", len(got))
	}
	seeders := map[string]bool{"6001": true, "6002": true, "6003": true}
	for i := 0; i < 3; i++ {
		if !seeders[got[i]] {
			t.Fatalf("position %d = %s, want a seeder: %v", i, got[i], got)
		}
	}
	if got[3] != "6100" || got[4] != "6011" {
		t.Fatalf("want origin then same-group leecher at 3,4: %v", got)
	}
	for _, p := range got {
		if p == "6010" {
			t.Fatalf("requester handed itself: %v", got)
		}
	}
	if n := len(get("", "", 20)); n != 5 {
		t.Fatalf("default numwant returned %d, want 5", n)
	}
	if n := len(get("2", "", 20)); n != 2 {
		t.Fatalf("numwant 2 returned %d", n)
	}
	if n := len(get("0", "", 20)); n != 0 {
		t.Fatalf("numwant 0 returned %d", n)
	}
}

func TestTokens(t *testing.T) {
	cfg := testConfig()
	newSecret, oldSecret := secret.Generate(), secret.Generate()
	cfg.Secrets = config.NewTokens(newSecret, oldSecret)
	tt := memTracker(t, cfg)
	h := ih(6)
	oldKeys, _ := token.NewKeys(oldSecret)
	foreign, _ := token.NewKeys(secret.Generate())
	future := time.Now().Add(time.Hour)
	good := tt.keys.Sign(token.PurposeAnnounce, h[:], future)
	other := ih(7)
	cases := []struct {
		name, tok string
		ok        bool
	}{
		{"current secret", good, true},
		{"previous secret (rotation)", oldKeys.Sign(token.PurposeAnnounce, h[:], future), true},
		{"origin token", tt.keys.Sign(token.PurposeOrigin, h[:], future), true},
		{"missing", "", false},
		{"tampered", good[:len(good)-2] + "AA", false},
		{"expired", tt.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(-time.Minute)), false},
		{"expired origin", tt.keys.Sign(token.PurposeOrigin, h[:], time.Now().Add(-time.Minute)), false},
		{"other infohash", tt.keys.Sign(token.PurposeAnnounce, other[:], future), false},
		{"foreign secret", foreign.Sign(token.PurposeAnnounce, h[:], future), false},
		{"other purpose", tt.keys.Sign("torrent", h[:], future), false},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			u := tt.base + "/announce"
			if tc.tok != "" {
				u += "?token=" + url.QueryEscape(tc.tok)
			}
			_, err := clientAnnounce(t, u, req(h, i+1, 10, anatracker.Started))
			if tc.ok && err != nil {
				t.Fatalf("want accepted: %v", err)
			}
			if !tc.ok && (err == nil || !strings.Contains(err.Error(), "failure reason")) {
				t.Fatalf("want failure reason, got %v", err)
			}
			// Scrape is held to the same rule (and counts rejections too).
			su := tt.base + "/scrape?" + url.Values{"info_hash": {string(h[:])}, "token": {tc.tok}}.Encode()
			_, failed := rawGet(t, su)["failure reason"]
			if failed == tc.ok {
				t.Fatalf("scrape failed=%v, want %v", failed, !tc.ok)
			}
		})
	}
	body := scrapeMetrics(t, tt.base)
	for _, want := range []string{`shoal_tracker_rejected_tokens_total{reason="missing"} 2`, `shoal_tracker_rejected_tokens_total{reason="expired"} 4`} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %s", want)
		}
	}
}

func scrapeMetrics(t *testing.T, base string) string {
	t.Helper()
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestMalformedQueries(t *testing.T) {
	cfg := testConfig()
	tt := memTracker(t, cfg)
	h := ih(8)
	tok := tt.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))
	id := pid(1)
	base := url.Values{"info_hash": {string(h[:])}, "peer_id": {string(id[:])}, "port": {"6881"}, "token": {tok}}
	with := func(k, v string) string {
		q := url.Values{}
		for kk, vv := range base {
			q[kk] = vv
		}
		if v == "\x00delete" {
			q.Del(k)
		} else {
			q.Set(k, v)
		}
		return q.Encode()
	}
	cases := map[string]string{
		"short info_hash":      with("info_hash", "abc"),
		"long info_hash":       with("info_hash", strings.Repeat("x", 40)),
		"no info_hash":         with("info_hash", "\x00delete"),
		"short peer_id":        with("peer_id", "p"),
		"no port":              with("port", "\x00delete"),
		"port zero":            with("port", "0"),
		"port too big":         with("port", "65536"),
		"port not a number":    with("port", "http"),
		"huge numwant":         with("numwant", "999999999999999999999999"),
		"numwant garbage":      with("numwant", "lots"),
		"left garbage":         with("left", "-x"),
		"negative uploaded":    with("uploaded", "-5"),
		"unknown event":        with("event", "paused"),
		"long group":           with("group", strings.Repeat("g", 65)),
		"bad escape":           "info_hash=%zz&peer_id=1",
		"garbage":              "%00%ff%25&&&===&info_hash",
		"empty":                "",
		"repeated info_hash":   base.Encode() + "&info_hash=" + url.QueryEscape(string(h[:])),
		"no token, else valid": with("token", "\x00delete"),
	}
	for name, q := range cases {
		t.Run(name, func(t *testing.T) {
			m := rawGet(t, tt.base+"/announce?"+q)
			if _, ok := m["failure reason"]; !ok {
				t.Fatalf("no failure reason in %v", m)
			}
		})
	}
	// A big but parseable numwant is capped, not refused.
	m := rawGet(t, tt.base+"/announce?"+with("numwant", "100000"))
	if fr, ok := m["failure reason"]; ok {
		t.Fatalf("numwant 100000 refused: %v", fr)
	}
	for _, q := range []string{"", "info_hash=abc", "info_hash=" + url.QueryEscape(string(h[:]))} {
		if _, ok := rawGet(t, tt.base+"/scrape?"+q)["failure reason"]; !ok {
			t.Fatalf("scrape %q: no failure reason", q)
		}
	}
}

func TestRedisOutageAndRecovery(t *testing.T) {
	r := testenv.StartRedis(t)
	cfg := testConfig()
	cfg.Redis.Addrs = []string{r.Addr}
	cfg.RequestTimeout = 300 * time.Millisecond
	tt := startTracker(t, cfg, nil, "tcp", "127.0.0.1:0")
	h := ih(9)
	u := tt.announceURL(h)
	mustAnnounce(t, u, req(h, 1, 10, anatracker.Started))
	health := func() int {
		code, rep := getHealth(t, tt.base)
		if st := rep.Checks["store"].Status; (code == 200) != (st == "ok") || (code == 200) != (rep.Status == "ok") {
			t.Fatalf("healthz %d with %+v", code, rep)
		}
		return code
	}
	if c := health(); c != 200 {
		t.Fatalf("healthz with redis up = %d", c)
	}
	r.Kill()
	start := time.Now()
	_, err := clientAnnounce(t, u, req(h, 2, 10, anatracker.Started))
	if err == nil || !strings.Contains(err.Error(), "temporarily unavailable") {
		t.Fatalf("announce with redis down: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("failure took %v; must be fast", d)
	}
	if c := health(); c != 503 {
		t.Fatalf("healthz with redis down = %d", c)
	}
	if _, rep := getHealth(t, tt.base); !strings.Contains(rep.Checks["store"].Error, "peer store unavailable") {
		t.Fatalf("healthz does not say why: %+v", rep)
	}
	if !strings.Contains(scrapeMetrics(t, tt.base), `shoal_tracker_store_up{store="redis"} 0`) {
		t.Error("store_up not 0 while redis is down")
	}
	r.Restart()
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = clientAnnounce(t, u, req(h, 2, 10, anatracker.Started))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no recovery after redis restart: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if c := health(); c != 200 {
		t.Fatalf("healthz after recovery = %d", c)
	}
}

// TestRedisHungBoundedTimeout covers a Redis that accepts connections but
// never answers (stopped process, network black hole): the timeout, not the
// client, must end the announce.
func TestRedisHungBoundedTimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	cfg := testConfig()
	cfg.Redis.Addrs = []string{l.Addr().String()}
	cfg.RequestTimeout = 300 * time.Millisecond
	tt := startTracker(t, cfg, nil, "tcp", "127.0.0.1:0")
	h := ih(10)
	start := time.Now()
	_, err = clientAnnounce(t, tt.announceURL(h), req(h, 1, 10, anatracker.Started))
	if err == nil || !strings.Contains(err.Error(), "failure reason") {
		t.Fatalf("announce against hung redis: %v", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("took %v", d)
	}
}

func TestHealthzAndMetrics(t *testing.T) {
	tt := memTracker(t, testConfig())
	h := ih(11)
	mustAnnounce(t, tt.announceURL(h), req(h, 1, 10, anatracker.Started))
	mustAnnounce(t, tt.announceURL(h), req(h, 1, 0, anatracker.Completed))
	if code, rep := getHealth(t, tt.base); code != 200 || rep.Status != "ok" || rep.Component != "tracker" || rep.Checks["store"].Status != "ok" || len(rep.Checks) != 1 {
		t.Fatalf("healthz: %d %+v", code, rep)
	}
	body := scrapeMetrics(t, tt.base)
	for _, want := range []string{
		`shoal_tracker_announces_total{event="started"} 1`,
		`shoal_tracker_announces_total{event="completed"} 1`,
		`shoal_tracker_swarm_peers_count 2`,
		`shoal_tracker_store_seconds_count{op="announce",store="memory"} 2`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

// getHealth fetches /healthz, which must be the house JSON report.
func getHealth(t *testing.T, base string) (int, httpx.HealthReport) {
	t.Helper()
	resp, err := http.Get(base + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var rep httpx.HealthReport
	if err := json.NewDecoder(resp.Body).Decode(&rep); err != nil {
		t.Fatalf("healthz body: %v", err)
	}
	return resp.StatusCode, rep
}

// TestMetricsDocumented exercises every metric family (announces, a bad
// request, a rejected token, a scrape, the store probe) and checks them
// against the naming rules and docs/metrics.md.
func TestMetricsDocumented(t *testing.T) {
	tt := memTracker(t, testConfig())
	h := ih(12)
	mustAnnounce(t, tt.announceURL(h), req(h, 1, 10, anatracker.Started))
	if _, err := clientAnnounce(t, tt.base+"/announce", req(h, 2, 10, anatracker.Started)); err == nil {
		t.Fatal("announce without a token accepted")
	}
	rawGet(t, tt.base+"/announce?port=x")
	rawGet(t, tt.base+"/scrape?"+url.Values{"info_hash": {string(h[:])}, "token": {tt.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))}}.Encode())
	getHealth(t, tt.base)
	metricstest.Documented(t, "tracker", tt.reg)
}

// TestTwoInstancesOneProcess builds two trackers from one config in one
// process: each keeps its own swarms, metrics and logger, and nothing
// process-global collides.
func TestTwoInstancesOneProcess(t *testing.T) {
	cfg := testConfig()
	process := prometheus.NewRegistry()
	process.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "process_marker_total", Help: "marker"}))
	var bases []string
	for range 2 {
		s, err := New(cfg, Deps{ProcessMetrics: process})
		if err != nil {
			t.Fatal(err)
		}
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		stop := serveInBackground(t, s, l)
		t.Cleanup(func() {
			stop()
			// Serve closed it; closing again is harmless.
			if err := s.Close(); err != nil {
				t.Errorf("second close: %v", err)
			}
		})
		bases = append(bases, "http://"+l.Addr().String())
	}
	keys, _ := token.NewKeys(testSecret)
	h := ih(13)
	tok := "/announce?token=" + keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))
	mustAnnounce(t, bases[0]+tok, req(h, 1, 0, anatracker.Started))
	if r := mustAnnounce(t, bases[1]+tok, req(h, 2, 10, anatracker.Started)); len(r.Peers) != 0 || r.Seeders != 0 {
		t.Fatalf("second instance sees the first's swarm: %+v", r)
	}
	for i, base := range bases {
		body := scrapeMetrics(t, base)
		if !strings.Contains(body, `shoal_tracker_announces_total{event="started"} 1`) || !strings.Contains(body, "process_marker_total 0") {
			t.Errorf("instance %d metrics:\n%s", i, body)
		}
	}
}

// TestShippedConfigLoads: configs/tracker.yml loads, holds exactly the
// defaults (secrets aside) and spells out every key of Config.
func TestShippedConfigLoads(t *testing.T) {
	t.Setenv("SHOAL_TRACKER_SECRET", secret.Generate())
	t.Setenv("SHOAL_CLUSTER_SECRET", secret.Generate())
	cfg, err := LoadConfig("../configs/tracker.yml")
	if err != nil {
		t.Fatal(err)
	}
	def := DefaultConfig()
	cfg.Secrets = nil
	if cfg.Cluster.Secret != "env:SHOAL_CLUSTER_SECRET" {
		t.Fatalf("cluster.secret = %q", cfg.Cluster.Secret)
	}
	cfg.Cluster.Secret = ""
	if len(cfg.Cluster.PreviousSecrets) == 0 {
		cfg.Cluster.PreviousSecrets = nil
	}
	if len(cfg.APITokens) == 0 {
		cfg.APITokens = nil
	}
	if len(cfg.Redis.Addrs) == 0 {
		cfg.Redis.Addrs = nil
	}
	if !reflect.DeepEqual(cfg, def) {
		t.Fatalf("configs/tracker.yml drifted from DefaultConfig:\n got %+v\nwant %+v", cfg, def)
	}
	b, err := os.ReadFile("../configs/tracker.yml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var missing []string
	var walk func(prefix string, typ reflect.Type, m map[string]any)
	walk = func(prefix string, typ reflect.Type, m map[string]any) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			key := f.Tag.Get("yaml")
			v, ok := m[key]
			if !ok {
				missing = append(missing, prefix+key)
				continue
			}
			if sub, isMap := v.(map[string]any); isMap && f.Type.Kind() == reflect.Struct {
				walk(prefix+key+".", f.Type, sub)
			}
		}
	}
	walk("", reflect.TypeFor[Config](), doc)
	if len(missing) > 0 {
		t.Fatalf("configs/tracker.yml does not document %v", missing)
	}
}

func TestRequestIP(t *testing.T) {
	cfg := testConfig()
	s, err := New(cfg, Deps{Store: NewMemoryStore(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	r, _ := http.NewRequest(http.MethodGet, "/announce", nil)
	r.RemoteAddr = "[::ffff:10.1.2.3]:5555"
	r.Header.Set("X-Forwarded-For", "192.0.2.9, 10.0.0.1")
	if ip, err := s.requestIP(r); err != nil || ip.String() != "10.1.2.3" {
		t.Fatalf("mapped remote addr: %v %v (header must be ignored unless configured)", ip, err)
	}
	s.cfg.RealIPHeader = "X-Forwarded-For"
	if ip, err := s.requestIP(r); err != nil || ip.String() != "192.0.2.9" {
		t.Fatalf("forwarded: %v %v", ip, err)
	}
	r.Header.Set("X-Forwarded-For", "not-an-ip")
	if _, err := s.requestIP(r); err == nil {
		t.Fatal("garbage header accepted")
	}
}

// TestScrapeChecksTokensOncePerInfohash: a scrape pairs the i-th token with
// the i-th info_hash, so it costs one check per infohash whatever the
// tokens; trying every token against every infohash made one request with
// many tokens cost thousands of HMACs (issue 22, finding 5).
func TestScrapeChecksTokensOncePerInfohash(t *testing.T) {
	tt := memTracker(t, testConfig())
	exp := time.Now().Add(time.Hour)
	checks := func() int {
		t.Helper()
		for _, l := range strings.Split(scrapeMetrics(t, tt.base), "\n") {
			if v, ok := strings.CutPrefix(l, "shoal_tracker_token_checks_total "); ok {
				n, err := strconv.Atoi(v)
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
		}
		return 0
	}
	const n = 8
	q := url.Values{}
	for i := 0; i < n; i++ {
		h := ih(byte(100 + i))
		q.Add("info_hash", string(h[:]))
		q.Add("token", tt.keys.Sign(token.PurposeAnnounce, h[:], exp))
	}
	before := checks()
	m := rawGet(t, tt.base+"/scrape?"+q.Encode())
	if files, ok := m["files"].(map[string]any); !ok || len(files) != n {
		t.Fatalf("scrape of %d infohashes with their tokens: %v", n, m)
	}
	if got := checks() - before; got != n {
		t.Fatalf("%d token checks for %d infohashes, want one each", got, n)
	}

	// One valid token, then many that are not: refused after at most two
	// checks (its own, and the first bad one's announce and origin tries).
	h0 := ih(100)
	q = url.Values{"info_hash": {string(h0[:])}, "token": {tt.keys.Sign(token.PurposeAnnounce, h0[:], exp)}}
	for i := 1; i < tt.cfg.MaxScrape; i++ {
		h := ih(byte(100 + i))
		q.Add("info_hash", string(h[:]))
		q.Add("token", tt.keys.Sign(token.PurposeAnnounce, h0[:], exp)) // valid, for another infohash
	}
	before = checks()
	if _, failed := rawGet(t, tt.base+"/scrape?"+q.Encode())["failure reason"]; !failed {
		t.Fatal("scrape with borrowed tokens succeeded")
	}
	if got := checks() - before; got > 3 {
		t.Fatalf("%d token checks for a scrape refused at its second infohash", got)
	}

	// More tokens than infohashes: refused before any check.
	q = url.Values{"info_hash": {string(h0[:])}}
	for i := 0; i < 500; i++ {
		q.Add("token", tt.keys.Sign(token.PurposeAnnounce, h0[:], exp))
	}
	before = checks()
	if _, failed := rawGet(t, tt.base+"/scrape?"+q.Encode())["failure reason"]; !failed {
		t.Fatal("scrape with 500 tokens for one infohash succeeded")
	}
	if got := checks() - before; got != 0 {
		t.Fatalf("%d token checks for a scrape with more tokens than infohashes", got)
	}
}
