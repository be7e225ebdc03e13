package preheat

import (
	"context"
	"encoding/hex"
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/token"
	"github.com/shoalproject/shoal/tracker"
)

// startTracker runs a real tracker (in-memory store) with the read API on
// and one swarm of one seeding peer in it; it returns the base URL, the
// API token and the swarm's infohash.
func startTrackerWithSwarm(t *testing.T) (string, string, [20]byte) {
	t.Helper()
	cfg := tracker.DefaultConfig()
	cfg.Secrets = config.NewTokens(secret.Generate())
	cfg.AllowUnsigned = true // the test's peer announces with a token alone
	apiToken := secret.Generate()
	cfg.APITokens = config.NewTokens(apiToken)
	s, err := tracker.New(cfg, tracker.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() { cancel(); <-done })
	base := "http://" + l.Addr().String()

	var ih [20]byte
	copy(ih[:], "swarm-of-the-console")
	keys, _ := token.NewKeys(cfg.Secrets.Values()...)
	q := url.Values{"info_hash": {string(ih[:])}, "peer_id": {"-SH0001-000000000001"}, "port": {"6881"}, "left": {"0"},
		"token": {keys.Sign(token.PurposeAnnounce, ih[:], time.Now().Add(time.Hour))}}
	resp, err := http.Get(base + "/announce?" + q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("announce: %s", resp.Status)
	}
	return base, apiToken, ih
}

func TestConsoleSwarms(t *testing.T) {
	base, apiToken, ih := startTrackerWithSwarm(t)
	const login = "console-token-0123456789abcdef0123456789"

	t.Run("no tracker configured", func(t *testing.T) {
		r := startReplica(t, testConfig("http://127.0.0.1:1"), NewMemoryStore())
		var v SwarmsView
		if code := consoleDo(t, consoleClient(t), "GET", r.URL+"/console/api/swarms", nil, &v); code != 200 || v.Configured || v.Swarms == nil {
			t.Fatalf("%d %+v", code, v)
		}
	})

	t.Run("login required, then the tracker's swarms", func(t *testing.T) {
		cfg := testConfig("http://127.0.0.1:1")
		cfg.APITokens = config.NewTokens(login)
		cfg.Tracker = TrackerConfig{URL: base + "/", Token: config.NewSecret(apiToken)}
		r := startReplica(t, cfg, NewMemoryStore())
		c := consoleClient(t)
		var e map[string]string
		if code := consoleDo(t, c, "GET", r.URL+"/console/api/swarms", nil, &e); code != 401 || e["error"] == "" {
			t.Fatalf("before login: %d %v", code, e)
		}
		if code := consoleDo(t, c, "POST", r.URL+"/console/api/login", map[string]string{"token": login}, nil); code != 204 {
			t.Fatalf("login = %d", code)
		}
		var v SwarmsView
		if code := consoleDo(t, c, "GET", r.URL+"/console/api/swarms", nil, &v); code != 200 || !v.Configured || len(v.Swarms) != 1 {
			t.Fatalf("%d %+v", code, v)
		}
		if s := v.Swarms[0]; s.InfoHash != hex.EncodeToString(ih[:]) || s.Complete != 1 || s.Origin != 0 || s.Incomplete != 0 {
			t.Fatalf("swarm %+v", s)
		}
	})

	t.Run("wrong tracker token is a readable error without the token", func(t *testing.T) {
		cfg := testConfig("http://127.0.0.1:1")
		wrong := secret.Generate()
		cfg.Tracker = TrackerConfig{URL: base, Token: config.NewSecret(wrong)}
		r := startReplica(t, cfg, NewMemoryStore())
		var e map[string]string
		code := consoleDo(t, consoleClient(t), "GET", r.URL+"/console/api/swarms", nil, &e)
		if code != http.StatusBadGateway || !strings.Contains(e["error"], "401") || strings.Contains(e["error"], wrong) || e["code"] != "UNAVAILABLE" || len(e) != 2 {
			t.Fatalf("%d %v", code, e)
		}
	})
}

func TestTrackerConfigRefused(t *testing.T) {
	for name, tc := range map[string]TrackerConfig{
		"token without url": {Token: config.NewSecret(secret.Generate())},
		"url without token": {URL: "http://127.0.0.1:6969"},
		"placeholder token": {URL: "http://127.0.0.1:6969", Token: config.NewSecret("changeme")},
		"not an http url":   {URL: "ftp://127.0.0.1:6969", Token: config.NewSecret(secret.Generate())},
		"url with userinfo": {URL: "http://u:p@127.0.0.1:6969", Token: config.NewSecret(secret.Generate())},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig("http://127.0.0.1:1")
			cfg.Tracker = tc
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), "tracker.") {
				t.Fatalf("validate: %v", err)
			}
			if tc.Token.IsSet() && tc.Token.Value() != "" && strings.Contains(err.Error(), tc.Token.Value()) {
				t.Fatalf("error reflects the token: %v", err)
			}
		})
	}
}
