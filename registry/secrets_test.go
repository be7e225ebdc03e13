package registry

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/secret"
)

// p2pConfig is a registry config with the p2p middleware; httpSecret and
// the options' YAML vary.
func p2pConfig(t *testing.T, httpSecret, options string) *configuration.Configuration {
	t.Helper()
	yml := `version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http: {addr: "127.0.0.1:0", secret: "` + httpSecret + `"}
storage:
  inmemory: {}
middleware:
  storage:
    - name: p2p
      options:
        seeder: {disabled: true}
` + options
	cfg, err := configuration.Parse(strings.NewReader(yml))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// With a guessable URL or tracker secret anyone mints torrent URLs (any
// blob, no credentials) or announce tokens: the registry must not start,
// and must say how to set one without echoing what it got.
func TestSecretsRefused(t *testing.T) {
	good := secret.Generate()
	t.Setenv("SHOAL_TEST_URL_SECRET", good)
	track := "        tracker: {url: http://127.0.0.1:9/announce, secrets: [" + good + "]}\n"
	for _, tc := range []struct {
		name, http, opts, want string
	}{
		{"placeholder p2p secrets", good, "        secrets: [change-me-registry-secret]\n" + track, "p2p secrets[0] is a placeholder"},
		{"short p2p secret (old key)", good, "        secret: short-secret\n" + track, "shorter than 32"},
		{"placeholder previous", good, "        secrets: [env:SHOAL_TEST_URL_SECRET, change-me-previous]\n" + track, "p2p secrets[1]"},
		{"both forms", good, "        secret: " + good + "\n        secrets: [" + good + "]\n" + track, "not both"},
		{"placeholder http.secret fallback", "change-me-registry-secret", track, "http.secret is a placeholder"},
		{"short http.secret fallback", "registry-secret", track, "http.secret is 15 bytes"},
		{"env reference in http.secret", "env:SHOAL_TEST_URL_SECRET", track, "REGISTRY_HTTP_SECRET"},
		{"placeholder tracker secret", good, "        tracker: {url: http://127.0.0.1:9/announce, secrets: [change-me-tracker-secret]}\n", "p2p tracker.secrets[0] is a placeholder"},
		{"short previous tracker secret", good, "        tracker: {url: http://127.0.0.1:9/announce, secrets: [" + good + ", old]}\n", "p2p tracker.secrets[1] is 3 bytes"},
		{"no tracker secret", good, "        tracker: {url: http://127.0.0.1:9/announce}\n", "tracker.secrets is required"},
	} {
		_, err := New(p2pConfig(t, tc.http, tc.opts), Deps{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: New = %v, want %q", tc.name, err, tc.want)
			continue
		}
		if tc.name != "env reference in http.secret" && tc.name != "both forms" && !strings.Contains(err.Error(), "openssl rand -hex 32") {
			t.Errorf("%s: %v does not say how to make a secret", tc.name, err)
		}
		for _, s := range []string{"change-me-registry-secret", "change-me-tracker-secret", "change-me-previous", "short-secret", good} {
			if strings.Contains(err.Error(), s) {
				t.Errorf("%s: error reflects a secret: %v", tc.name, err)
			}
		}
	}
}

// The shipped configs/registry.yml reads its secrets from the environment
// and starts with them set; without them it does not.
func TestShippedConfigSecrets(t *testing.T) {
	t.Setenv("SHOAL_REGISTRY_SECRET", "")
	t.Setenv("SHOAL_TRACKER_SECRET", "")
	check := func() error {
		cfg, err := LoadConfig("../configs/registry.yml")
		if err != nil {
			t.Fatal(err)
		}
		return initKeysOf(t, cfg)
	}
	if err := check(); err == nil || !strings.Contains(err.Error(), "p2p secrets[0]") {
		t.Fatalf("shipped config with SHOAL_REGISTRY_SECRET empty: %v", err)
	}
	t.Setenv("SHOAL_REGISTRY_SECRET", secret.Generate())
	if err := check(); err == nil || !strings.Contains(err.Error(), "tracker.secrets[0]") {
		t.Fatalf("shipped config with SHOAL_TRACKER_SECRET empty: %v", err)
	}
	t.Setenv("SHOAL_TRACKER_SECRET", secret.Generate())
	if err := check(); err != nil {
		t.Fatalf("shipped config with both set: %v", err)
	}
}

// TestURLKeyRotation: the URL key rotates like the tracker's. A torrent URL
// signed with the old key keeps working while the old key is listed second,
// new URLs are signed with the new key, and the old URL fails once the old
// key is dropped.
func TestURLKeyRotation(t *testing.T) {
	oldKey, newKey := secret.Generate(), secret.Generate()
	r := startRegistry(t, regOpts{urlSecrets: []string{oldKey}, noSeeder: true})
	img := pushImage(t, r.Addr, "rot/app:v1", 100_000, 1)
	dgst := layerDigests(t, img)[0].String()
	_, oldURL := torrentRedirect(t, r.URL(), "rot/app", dgst, nil)
	if code := getStatus(t, oldURL); code != http.StatusOK {
		t.Fatalf("torrent URL before rotation: %d", code)
	}
	restart := func(secrets ...string) {
		r.proc.Stop()
		r = startRegistry(t, regOpts{root: r.Root, addr: r.Addr, seederAddr: r.SeederAddr, urlSecrets: secrets, noSeeder: true})
	}
	newKeys := mustKeys(t, newKey)
	signedWithNew := func(u string) bool {
		p, err := url.Parse(u)
		if err != nil {
			t.Fatal(err)
		}
		return newKeys.Verify(purposeTorrent, urlSubject("rot/app", digest.Digest(dgst)), p.Query().Get("token"), time.Now()) == nil
	}
	if signedWithNew(oldURL) {
		t.Fatal("test broken: the old URL verifies with the new key")
	}

	restart(newKey, oldKey)
	if code := getStatus(t, oldURL); code != http.StatusOK {
		t.Fatalf("old-key URL while the old key is still listed: %d, want 200", code)
	}
	_, newURL := torrentRedirect(t, r.URL(), "rot/app", dgst, nil)
	if !signedWithNew(newURL) {
		t.Fatalf("new URL %s is not signed with the new key", newURL)
	}

	restart(newKey)
	if code := getStatus(t, oldURL); code != http.StatusUnauthorized {
		t.Fatalf("old-key URL after the old key was dropped: %d, want 401", code)
	}
	if code := getStatus(t, newURL); code != http.StatusOK {
		t.Fatalf("new-key URL after rotation: %d, want 200", code)
	}
}

func getStatus(t *testing.T, u string) int {
	t.Helper()
	resp, err := noRedirect.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

// `shoal run`'s registry signs URLs with the http.secret it generates and
// announces with the generated tracker secret; both pass the checks.
func TestEmbeddedConfigSecrets(t *testing.T) {
	keys := func(httpSecret, trackerSecret string) error {
		cfg, err := EmbeddedConfig(EmbeddedOptions{DataDir: t.TempDir(), TrackerURL: "http://127.0.0.1:6969/announce",
			TrackerSecret: trackerSecret, HTTPSecret: httpSecret})
		if err != nil {
			t.Fatal(err)
		}
		return initKeysOf(t, cfg)
	}
	if err := keys(secret.Generate(), secret.Generate()); err != nil {
		t.Fatalf("generated secrets refused: %v", err)
	}
	if err := keys("weak", secret.Generate()); err == nil {
		t.Fatal("embedded registry accepted a weak http.secret for URLs")
	}
}

// initKeysOf resolves the URL and announce secrets of cfg's p2p middleware
// as New does, without building the rest of the registry.
func initKeysOf(t *testing.T, cfg *configuration.Configuration) error {
	t.Helper()
	s := &Server{cfg: cfg, log: logrus.WithField("test", t.Name())}
	for _, mw := range cfg.Middleware["storage"] {
		if mw.Name == driver.Name {
			var err error
			if s.opts, err = driver.ParseOptions(mw.Options); err != nil {
				t.Fatal(err)
			}
		}
	}
	return s.initKeys()
}
