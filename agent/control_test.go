package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/secret"
)

// The control API serves cluster members only: plain HTTP, TLS without a
// certificate and members of another cluster start no fetch; a member
// pinned to this node's key gets the blob, and a registry's refusal comes
// back as a status and code, never its body.
func TestControlFetchMembersOnly(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	img := pushRandom(t, reg, "lib/c", 1<<20, 1)
	cfg := testConfig(t, reg)
	cfg.P2P.Enabled = false
	ag := startAgent(t, cfg)
	d := layerDigests(t, img)[0]
	l, _ := img.LayerByDigest(d)
	size, _ := l.Size()
	good := nodeapi.FetchRequest{Registry: "http://" + reg, Repository: "lib/c", Digest: d.String(), Size: size}
	body, _ := json.Marshal(good)

	// Plain HTTP and anonymous TLS.
	if resp, err := http.Post("http://"+ag.control+nodeapi.FetchPath, "application/json", strings.NewReader(string(body))); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP fetch accepted")
		}
	}
	anon := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := anon.Post("https://"+ag.control+nodeapi.FetchPath, "application/json", strings.NewReader(string(body))); err == nil {
		resp.Body.Close()
		t.Fatalf("TLS without a client certificate answered %d", resp.StatusCode)
	}
	// A member of another cluster (another join secret).
	otherAuth, _ := cluster.NewAuthority(secret.Generate())
	otherID, _ := otherAuth.Issue("preheat", nil)
	if _, err := nodeapi.NewClient(otherAuth, otherID).Fetch(context.Background(), "https://"+ag.control, ag.identity.Public(), good); !errors.Is(err, nodeapi.ErrUnreachable) {
		t.Fatalf("foreign member: %v", err)
	}
	if _, ok := ag.store.Lookup(d.Hex); ok {
		t.Fatal("a refused caller got the blob fetched")
	}

	auth, _ := cluster.NewAuthority(testClusterSecret)
	me, _ := auth.Issue("preheat", nil)
	c := nodeapi.NewClient(auth, me)
	fr, err := c.Fetch(context.Background(), "https://"+ag.control, ag.identity.Public(), good)
	if err != nil || fr.Source != "http" || fr.Digest != d.String() || fr.BytesFromRegistry != size {
		t.Fatalf("member fetch: %v %+v", err, fr)
	}
	if fr, err := c.Fetch(context.Background(), "https://"+ag.control, ag.identity.Public(), good); err != nil || fr.Source != "cache" {
		t.Fatalf("second fetch: %v %+v", err, fr)
	}
	unknown := good
	unknown.Digest, unknown.Size = "sha256:"+strings.Repeat("0", 64), 0
	_, err = c.Fetch(context.Background(), "https://"+ag.control, ag.identity.Public(), unknown)
	var se *nodeapi.StatusError
	if !errors.As(err, &se) || se.Status != 404 || se.Code != nodeapi.CodeBlobUnknown || strings.Contains(se.Detail, "BLOB_UNKNOWN") {
		t.Fatalf("unknown blob: %#v", err)
	}
	bad := good
	bad.Registry = "ftp://x"
	if _, err := c.Fetch(context.Background(), "https://"+ag.control, ag.identity.Public(), bad); !errors.As(err, &se) || se.Status != 400 || se.Code != nodeapi.CodeInvalid {
		t.Fatalf("bad registry: %v", err)
	}
}

// The agent's heartbeats are signed with its node identity: they verify
// against the cluster authority, carry the node id in the certificate and
// timestamps that increase.
func TestHeartbeatSigned(t *testing.T) {
	auth, _ := cluster.NewAuthority(testClusterSecret)
	type got struct {
		hb  nodeapi.Heartbeat
		m   cluster.Member
		at  time.Time
		err error
	}
	ch := make(chan got, 8)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != nodeapi.HeartbeatPath || r.Method != http.MethodPost {
			http.NotFound(w, r)
			return
		}
		var raw json.RawMessage
		_ = json.NewDecoder(r.Body).Decode(&raw)
		var g got
		g.m, g.at, g.err = nodeapi.Verify(auth, r.Header, r.Method, r.URL.Path, raw, time.Now(), time.Minute)
		_ = json.Unmarshal(raw, &g.hb)
		select {
		case ch <- g:
		default:
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	cfg := testConfig(t, "127.0.0.1:1")
	cfg.Preheat.URL = srv.URL
	cfg.Preheat.Interval = 100 * time.Millisecond
	cfg.Node.Groups = []string{"zone-a"}
	cfg.Control.Advertise = "https://127.0.0.1:9/"
	cfg.P2P.Enabled = false
	ag := startAgent(t, cfg)
	var last time.Time
	for range 2 {
		select {
		case g := <-ch:
			if g.err != nil || g.m.Name != "test-node" || !g.m.Key.Equal(ag.identity.Public()) || !g.at.After(last) {
				t.Fatalf("heartbeat signature: %v %+v %v", g.err, g.m, g.at)
			}
			last = g.at
			hb := g.hb
			if hb.ID != "test-node" || hb.Address != "https://127.0.0.1:9" || len(hb.Groups) != 1 || hb.Groups[0] != "zone-a" || hb.CacheFreeBytes != cfg.Cache.MaxBytes {
				t.Fatalf("heartbeat %+v", hb)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("no heartbeat")
		}
	}
}
