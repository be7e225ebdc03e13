package preheat

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/preheat/console"
)

// consoleClient is a browser-like client: a cookie jar and the console's
// write header.
func consoleClient(t *testing.T) *http.Client {
	jar, err := cookiejar.New(nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Jar: jar, Timeout: 10 * time.Second}
}

func consoleDo(t *testing.T, c *http.Client, method, u string, body any, out any) int {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = strings.NewReader(string(b))
	}
	req, _ := http.NewRequest(method, u, rd)
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(console.Header, "1")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	if out != nil && len(raw) > 0 {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: %s: %q", method, u, resp.Status, raw)
		}
	}
	return resp.StatusCode
}

func TestConsoleOpenOnLoopbackOnly(t *testing.T) {
	cfg := testConfig("http://127.0.0.1:1")
	r := startReplica(t, cfg, NewMemoryStore())
	c := consoleClient(t)
	var s map[string]any
	if consoleDo(t, c, "GET", r.URL+"/console/api/session", nil, &s); s["auth"] != "open" || s["loggedIn"] != true {
		t.Fatalf("session %v", s)
	}
	if code := consoleDo(t, c, "GET", r.URL+"/console/api/overview", nil, &map[string]any{}); code != 200 {
		t.Fatalf("open overview = %d", code)
	}
	// The page and its assets are served with a strict CSP.
	resp, err := http.Get(r.URL + "/console/")
	if err != nil {
		t.Fatal(err)
	}
	page, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(page), `<html lang="en">`) || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "script-src 'self'") {
		t.Fatalf("page %d %q", resp.StatusCode, resp.Header)
	}
	for _, a := range []string{"console.js", "console.css"} {
		if code := call(t, "GET", r.URL+"/console/assets/"+a, nil, nil, nil); code != 200 {
			t.Fatalf("asset %s = %d", a, code)
		}
	}
	if code := call(t, "GET", r.URL+"/console/assets/nothere.js", nil, nil, &map[string]any{}); code != 404 {
		t.Fatalf("missing asset = %d", code)
	}
	// Writes without the console header (a cross-site form) are refused.
	if code := call(t, "POST", r.URL+"/console/api/jobs", nil, `{"image":"a/b:c"}`, &map[string]any{}); code != 403 {
		t.Fatalf("write without header = %d", code)
	}
	// A DNS-rebound name is not loopback, whatever address it resolved to.
	req, _ := http.NewRequest("GET", r.URL+"/console/api/overview", nil)
	req.Host = "attacker.example:8002"
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 403 {
		t.Fatalf("rebound host = %d", resp.StatusCode)
	}

	// Listening beyond loopback without tokens: preheat does not start
	// (TestOpenListenerRefused covers the configured address).
	svc, err := New(cfg, Deps{Store: NewMemoryStore()})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", ":0")
	if err != nil {
		t.Fatal(err)
	}
	if err := svc.Serve(context.Background(), l); err == nil || !strings.Contains(err.Error(), "apiTokens") {
		t.Fatalf("served beyond loopback without tokens: %v", err)
	}
}

// With tokens: log in for a cookie session; the session works on every
// replica with the same tokens; a bad image is answered with what is wrong.
func TestConsoleLoginAcrossReplicas(t *testing.T) {
	reg := startRegistry(t)
	reg.push(t, "lib/app:v1", 4<<10, 2)
	rs := testenv.StartRedis(t)
	cfg := testConfig(reg.URL)
	cfg.APITokens = config.NewTokens("console-token-0123456789abcdef0123456789")
	a := startReplica(t, cfg, redisStore(t, rs.Addr))
	b := startReplica(t, cfg, redisStore(t, rs.Addr))
	ag := startAgent(t, "n1", "")
	heartbeat(t, a.URL, ag.ID, ag.URL())

	c := consoleClient(t)
	if code := consoleDo(t, c, "GET", a.URL+"/console/api/overview", nil, &map[string]any{}); code != 401 {
		t.Fatalf("overview before login = %d", code)
	}
	var e map[string]string
	if code := consoleDo(t, c, "POST", a.URL+"/console/api/login", map[string]string{"token": "wrong"}, &e); code != 401 || e["error"] == "" {
		t.Fatalf("wrong token: %d %v", code, e)
	}
	if code := consoleDo(t, c, "POST", a.URL+"/console/api/login", map[string]string{"token": cfg.APITokens[0].Value()}, nil); code != 204 {
		t.Fatalf("login = %d", code)
	}
	// The cookie of replica a, presented to replica b.
	u := strings.Replace(a.URL, "http://", "", 1)
	var sess *http.Cookie
	for _, ck := range c.Jar.Cookies(mustURL(t, a.URL+"/console/")) {
		sess = ck
	}
	if sess == nil || strings.Contains(sess.Value, cfg.APITokens[0].Value()) {
		t.Fatalf("session cookie %v on %s", sess, u)
	}
	cb := consoleClient(t)
	cb.Jar.SetCookies(mustURL(t, b.URL+"/console/"), []*http.Cookie{sess})
	if code := consoleDo(t, cb, "GET", b.URL+"/console/api/overview", nil, &map[string]any{}); code != 200 {
		t.Fatalf("replica b with a's session = %d", code)
	}

	// Bad input is answered with what is wrong.
	for img, want := range map[string]string{"Lib/App:v1": "lowercase", "lib/app:v1 x": "spaces", "": "required"} {
		if code := consoleDo(t, c, "POST", a.URL+"/console/api/jobs", JobRequest{Image: img}, &e); code != 400 || !strings.Contains(e["error"], want) {
			t.Fatalf("image %q: %d %v", img, code, e)
		}
	}
	if code := consoleDo(t, c, "POST", a.URL+"/console/api/jobs", JobRequest{Image: reg.Host + "/lib/app:v1", Count: 1, Percentage: 5}, &e); code != 400 {
		t.Fatalf("count and percentage: %d %v", code, e)
	}

	// A job made on a is followed live on b.
	var j Job
	if code := consoleDo(t, c, "POST", a.URL+"/console/api/jobs", JobRequest{Image: reg.Host + "/lib/app:v1", Nodes: []string{"127.0.0.1"}}, &j); code != 201 || j.Source != "console" {
		t.Fatalf("create = %d %+v", code, j)
	}
	req, _ := http.NewRequest("GET", fmt.Sprintf("%s/console/api/events?job=%d", b.URL, j.ID), nil)
	resp, err := cb.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); resp.StatusCode != 200 || ct != "text/event-stream" {
		t.Fatalf("events %d %s", resp.StatusCode, ct)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	event, sawOverview := "", false
	for sc.Scan() {
		line := sc.Text()
		if ev, ok := strings.CutPrefix(line, "event: "); ok {
			event = ev
			continue
		}
		data, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			continue
		}
		if event == "overview" {
			var o Overview
			if err := json.Unmarshal([]byte(data), &o); err != nil || len(o.Nodes) != 1 || o.Nodes[0].ID != "n1" {
				t.Fatalf("overview %s", data)
			}
			sawOverview = true
		}
		if event == "job" {
			var v JobView
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatal(err)
			}
			if v.State == StateSuccess {
				if len(v.Progress) != 3 || !sawOverview {
					t.Fatalf("final view %+v (overview seen: %v)", v, sawOverview)
				}
				return
			}
			if v.State.Terminal() {
				t.Fatalf("job ended %s: %s", v.State, v.Error)
			}
		}
	}
	t.Fatalf("event stream ended: %v", sc.Err())
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// The heartbeat's byte counters reach the node list and the traffic
// totals; negative counts are refused.
func TestHeartbeatCounters(t *testing.T) {
	r := startReplica(t, testConfig("http://127.0.0.1:1"), NewMemoryStore())
	started := time.Now().Add(-time.Second).UTC()
	send := func(hb nodeapi.Heartbeat) int {
		code, _ := heartbeatAs(t, r.URL, testIdentity("n1"), hb, time.Now())
		return code
	}
	hb := nodeapi.Heartbeat{ID: "n1", Address: "https://127.0.0.1:9", StartedAt: started, BytesFromRegistry: 100, BytesFromPeers: 300, BytesServedToPeers: 50}
	if code := send(hb); code != 204 {
		t.Fatalf("heartbeat = %d", code)
	}
	hb.BytesFromRegistry, hb.BytesFromPeers = 150, 700
	send(hb)
	var ns struct{ Nodes []NodeView }
	call(t, "GET", r.URL+"/api/v1/nodes", nil, nil, &ns)
	if n := ns.Nodes[0]; n.BytesFromRegistry != 150 || n.BytesFromPeers != 700 || n.BytesServedToPeers != 50 || !n.StartedAt.Equal(started) {
		t.Fatalf("node %+v", n)
	}
	var tr struct{ Traffic []TrafficPoint }
	call(t, "GET", r.URL+"/console/api/traffic?minutes=5", nil, nil, &tr)
	var reg, peers int64
	for _, p := range tr.Traffic {
		reg, peers = reg+p.FromRegistry, peers+p.FromPeers
	}
	if reg != 150 || peers != 700 {
		t.Fatalf("traffic %+v: want 150 from the registry, 700 from nodes", tr.Traffic)
	}
	if code := call(t, "GET", r.URL+"/console/api/traffic?minutes=-1", nil, nil, &map[string]any{}); code != 400 {
		t.Fatalf("bad minutes = %d", code)
	}
	hb.BytesFromPeers = -1
	if code := send(hb); code != 400 {
		t.Fatalf("negative counter = %d", code)
	}
}

// A job the stream cannot show is a "problem" event in the one error shape.
func TestConsoleEventsProblem(t *testing.T) {
	r := startReplica(t, testConfig("http://127.0.0.1:1"), NewMemoryStore())
	resp, err := consoleClient(t).Get(r.URL + "/console/api/events?job=999")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	event := ""
	for sc.Scan() {
		if ev, ok := strings.CutPrefix(sc.Text(), "event: "); ok {
			event = ev
			continue
		}
		data, ok := strings.CutPrefix(sc.Text(), "data: ")
		if !ok || event != "problem" {
			continue
		}
		var e httpx.ErrorBody
		if err := json.Unmarshal([]byte(data), &e); err != nil || e.Code != httpx.CodeNotFound || !strings.Contains(e.Error, "job 999 not found") {
			t.Fatalf("problem %s", data)
		}
		return
	}
	t.Fatalf("stream ended without a problem event: %v", sc.Err())
}
