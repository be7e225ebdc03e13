package registry

import (
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"
)

func TestTorrentBadInput(t *testing.T) {
	r := startRegistry(t, regOpts{urlExpiry: "2s"})
	img := pushImage(t, r.Addr, "bad/app:v1", 50_000, 1)
	dgst := layerDigests(t, img)[0].String()
	_, loc := torrentRedirect(t, r.URL(), "bad/app", dgst, nil)
	good, err := url.Parse(loc)
	if err != nil || loc == "" {
		t.Fatalf("redirect location %q: %v", loc, err)
	}
	with := func(mutate func(q url.Values, u *url.URL)) string {
		u := *good
		q := u.Query()
		mutate(q, &u)
		u.RawQuery = q.Encode()
		return u.String()
	}
	get := func(target string) (*http.Response, []byte) {
		req, _ := http.NewRequest(http.MethodGet, target, nil)
		return getBody(t, req)
	}

	tests := []struct {
		name   string
		url    string
		accept bool
		status int
		code   string
	}{
		{"malformed digest", with(func(_ url.Values, u *url.URL) { u.Path = TorrentPath + "sha256:xyz" }), false, 400, "DIGEST_INVALID"},
		{"no token", with(func(q url.Values, _ *url.URL) { q.Del("token") }), false, 401, "UNAUTHORIZED"},
		{"tampered token", with(func(q url.Values, _ *url.URL) { q.Set("token", q.Get("token")[:len(q.Get("token"))-2]+"AA") }), false, 401, "UNAUTHORIZED"},
		{"other repository", with(func(q url.Values, _ *url.URL) { q.Set("repo", "other/app") }), false, 401, "UNAUTHORIZED"},
		{"other digest", with(func(_ url.Values, u *url.URL) { u.Path = TorrentPath + "sha256:" + strings.Repeat("a", 64) }), false, 401, "UNAUTHORIZED"},
		{"unknown blob", r.URL() + "/v2/bad/app/blobs/sha256:" + strings.Repeat("b", 64), true, 404, "BLOB_UNKNOWN"},
		{"malformed blob digest", r.URL() + "/v2/bad/app/blobs/sha256:nothex", true, 400, "DIGEST_INVALID"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			req, _ := http.NewRequest(http.MethodGet, tc.url, nil)
			if tc.accept {
				req.Header.Set("Accept", "application/x-bittorrent")
			}
			resp, body := getBody(t, req)
			assertOCIError(t, resp, body, tc.status, tc.code)
		})
	}

	if resp, _ := get(loc); resp.StatusCode != 200 {
		t.Fatalf("valid URL: %d", resp.StatusCode)
	}
	time.Sleep(3 * time.Second)
	resp, body := get(loc)
	assertOCIError(t, resp, body, 401, "UNAUTHORIZED")
	if !strings.Contains(string(body), "expired") {
		t.Errorf("expired URL error does not say so: %s", body)
	}
}

// TestTorrentNeedsReadAccess: with auth on, the torrent redirect is subject to
// the same decision as the blob itself.
func TestTorrentNeedsReadAccess(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRegistry(t, regOpts{extra: "auth:\n  htpasswd: {realm: shoal, path: " + htpasswd + "}\n"})

	// Push as alice with a plain monolithic upload of one blob.
	auth := http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}} // alice:secret
	data := []byte("private layer bytes")
	dgst := uploadAs(t, r.URL(), "private/app", data, auth)

	resp, _ := torrentRedirect(t, r.URL(), "private/app", dgst, nil)
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous torrent request: %d, want 401", resp.StatusCode)
	}
	resp, _ = torrentRedirect(t, r.URL(), "private/app", dgst, http.Header{"Authorization": {"Basic YWxpY2U6d3Jvbmc="}})
	if resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password torrent request: %d, want 401", resp.StatusCode)
	}
	resp, loc := torrentRedirect(t, r.URL(), "private/app", dgst, auth)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("authorized torrent request: %d", resp.StatusCode)
	}
	// The signed URL carries the decision: no credentials needed to fetch it.
	fetchMetainfo(t, loc)
}

func uploadAs(t *testing.T, base, repo string, data []byte, h http.Header) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	req.Header = h.Clone()
	resp, body := getBody(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", resp.StatusCode, body)
	}
	d := digestOf(data)
	u, _ := url.Parse(base)
	next, _ := u.Parse(resp.Header.Get("Location"))
	q := next.Query()
	q.Set("digest", d)
	next.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, next.String(), strings.NewReader(string(data)))
	req.Header = h.Clone()
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body = getBody(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("commit upload: %d %s", resp.StatusCode, body)
	}
	return d
}
