package tracker

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/bencode"
	anatracker "github.com/anacrolix/torrent/tracker"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/secret"
)

func getJSON(t *testing.T, u, bearer string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, u, nil)
	if bearer != "" {
		req.Header.Set("Authorization", "Bearer "+bearer)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: content type %q", u, ct)
	}
	var body map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		t.Fatalf("%s: body is not JSON: %v", u, err)
	}
	return resp.StatusCode, body
}

func TestSwarmsAPI(t *testing.T) {
	token := secret.Generate()
	cfg := testConfig()
	cfg.APITokens = config.NewTokens(token)
	cfg.MaxSwarms = 5
	tt := memTracker(t, cfg)
	h := ih(7)
	mustAnnounce(t, tt.announceURL(h), req(h, 1, 0, anatracker.None))
	mustAnnounce(t, tt.announceURL(h), req(h, 2, 10, anatracker.None))

	u := tt.base + "/api/v1/swarms"
	for _, c := range []struct {
		name, url, bearer string
		status            int
		code, errHas      string
	}{
		{"no token", u, "", http.StatusUnauthorized, "UNAUTHORIZED", "apiTokens"},
		{"wrong token", u, secret.Generate(), http.StatusUnauthorized, "UNAUTHORIZED", "apiTokens"},
		{"announce secret is not an API token", u, testSecret, http.StatusUnauthorized, "UNAUTHORIZED", "apiTokens"},
		{"limit not a number", u + "?limit=x", token, http.StatusBadRequest, "INVALID", "limit"},
		{"limit over the cap", u + "?limit=6", token, http.StatusBadRequest, "INVALID", "limit"},
	} {
		t.Run(c.name, func(t *testing.T) {
			status, body := getJSON(t, c.url, c.bearer)
			msg, _ := body["error"].(string)
			if status != c.status || !strings.Contains(msg, c.errHas) || body["code"] != c.code || len(body) != 2 {
				t.Fatalf("status %d body %v; want %d, code %s and an error naming %q", status, body, c.status, c.code, c.errHas)
			}
		})
	}

	status, body := getJSON(t, u+"?limit=5", token)
	if status != http.StatusOK {
		t.Fatalf("status %d body %v", status, body)
	}
	sw, _ := body["swarms"].([]any)
	if len(sw) != 1 || body["limit"] != float64(5) {
		t.Fatalf("body %v", body)
	}
	got := sw[0].(map[string]any)
	if got["infoHash"] != hex.EncodeToString(h[:]) || got["complete"] != float64(1) || got["incomplete"] != float64(1) || got["origin"] != float64(0) {
		t.Fatalf("swarm %v", got)
	}
}

// Router misses answer the house JSON error too, on every path.
func TestRouterMissesJSONErrors(t *testing.T) {
	tt := memTracker(t, testConfig())
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodPost, "/api/v1/swarms", http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"},
		{http.MethodPost, "/announce", http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"},
		{http.MethodDelete, "/healthz", http.StatusMethodNotAllowed, "METHOD_NOT_ALLOWED"},
		{http.MethodGet, "/api/v1/nope", http.StatusNotFound, "NOT_FOUND"},
		{http.MethodGet, "/", http.StatusNotFound, "NOT_FOUND"},
		{http.MethodGet, "/debug/pprof/", http.StatusNotFound, "NOT_FOUND"},
	} {
		req, _ := http.NewRequest(c.method, tt.base+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var body map[string]string
		err = json.NewDecoder(resp.Body).Decode(&body)
		resp.Body.Close()
		if resp.StatusCode != c.status || err != nil || body["error"] == "" || body["code"] != c.code || len(body) != 2 {
			t.Errorf("%s %s: %d %v %v", c.method, c.path, resp.StatusCode, body, err)
		}
		if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
			t.Errorf("%s %s: content type %q", c.method, c.path, ct)
		}
		if c.status == http.StatusMethodNotAllowed && resp.Header.Get("Allow") != "GET, HEAD" {
			t.Errorf("%s %s: Allow %q", c.method, c.path, resp.Header.Get("Allow"))
		}
	}
}

func TestSwarmsAPIOffWithoutTokens(t *testing.T) {
	tt := memTracker(t, testConfig())
	status, body := getJSON(t, tt.base+"/api/v1/swarms", "anything")
	if status != http.StatusNotFound || !strings.Contains(body["error"].(string), "apiTokens") || body["code"] != "NOT_FOUND" {
		t.Fatalf("status %d body %v", status, body)
	}
}

func TestSwarmsAPITokensRefused(t *testing.T) {
	for name, tokens := range map[string][]string{
		"placeholder":      {"changeme"},
		"short":            {"abc"},
		"same as a secret": {testSecret},
	} {
		t.Run(name, func(t *testing.T) {
			cfg := testConfig()
			cfg.APITokens = config.NewTokens(tokens...)
			err := cfg.Validate()
			if err == nil || !strings.Contains(err.Error(), "apiTokens") {
				t.Fatalf("validate: %v", err)
			}
			if strings.Contains(err.Error(), tokens[0]) {
				t.Fatalf("error reflects the token: %v", err)
			}
		})
	}
}

// A handler's panic costs one request, answered in the route's own shape:
// a bencoded failure reason for BitTorrent clients, the JSON error for the
// rest. The log names the path, never the query and its token.
func TestRecoverPanicsAnswersInTheRouteShape(t *testing.T) {
	var logged bytes.Buffer
	log := logrus.New()
	log.SetOutput(&logged)
	h := recoverPanics(logrus.NewEntry(log), http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("bug") }))
	for path, check := range map[string]func(*httptest.ResponseRecorder) bool{
		"/announce": func(w *httptest.ResponseRecorder) bool {
			var m map[string]any
			return bencode.Unmarshal(w.Body.Bytes(), &m) == nil && m["failure reason"] == "internal tracker error"
		},
		"/api/v1/swarms": func(w *httptest.ResponseRecorder) bool {
			var m map[string]string
			return w.Code == http.StatusInternalServerError && json.Unmarshal(w.Body.Bytes(), &m) == nil && m["code"] == "INTERNAL"
		},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, path+"?token=secret-token", nil))
		if !check(w) {
			t.Errorf("%s: %d %q", path, w.Code, w.Body.String())
		}
	}
	if !strings.Contains(logged.String(), "/announce") || strings.Contains(logged.String(), "secret-token") {
		t.Errorf("log: %s", logged.String())
	}
}
