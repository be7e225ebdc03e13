// Package browsertest drives preheat's admin console in headless Chromium
// against a real `shoal run`. It is a module of its own so that the browser
// driver (chromedp) stays out of the shoal module and its binary.
package browsertest

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// testClusterSecret is the join secret the test gives `shoal run`, so that
// its heartbeats are a member's.
var testClusterSecret = secret.Generate()

// call is testenv.Call, named as in preheat's own tests.
var call = testenv.Call

// heartbeat enrolls node id at addr in groups, signed as a member.
func heartbeat(t *testing.T, api string, id, addr string, groups ...string) {
	t.Helper()
	sendHeartbeat(t, api, nodeapi.Heartbeat{ID: id, Address: addr, Groups: groups, CacheFreeBytes: 1 << 30})
}

// sendHeartbeat posts hb signed as the member hb.ID.
func sendHeartbeat(t *testing.T, api string, hb nodeapi.Heartbeat) {
	t.Helper()
	authority, err := cluster.NewAuthority(testClusterSecret)
	if err != nil {
		t.Fatal(err)
	}
	ident, err := authority.Issue(hb.ID, nil)
	if err != nil {
		t.Fatal(err)
	}
	id := hb.ID
	b, _ := json.Marshal(hb)
	req, _ := http.NewRequest(http.MethodPost, api+nodeapi.HeartbeatPath, bytes.NewReader(b))
	req.Header.Set("Content-Type", "application/json")
	nodeapi.Sign(req.Header, ident, http.MethodPost, nodeapi.HeartbeatPath, b, time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		raw, _ := io.ReadAll(resp.Body)
		t.Fatalf("heartbeat %s: %d %s", id, resp.StatusCode, raw)
	}
}
