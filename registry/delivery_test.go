package registry

import (
	"bytes"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoalproject/shoal/driver"
)

// Torrent and piece URLs are under /v2/ (a proxy forwarding only /v2/
// passes them); the URLs of older registries, outside /v2/, still work
// with the same tokens.
func TestURLsUnderV2AndLegacyPaths(t *testing.T) {
	r := startRegistry(t, regOpts{})
	img := pushImage(t, r.Addr, "paths/app:v1", 200_000, 1)
	dgst := layerDigests(t, img)[0].String()

	blobURL, torrentURL := blobURLFromTorrent(t, r, "paths/app", dgst)
	if !strings.HasPrefix(torrentURL, r.URL()+"/v2/_shoal/torrents/"+dgst+"?") {
		t.Errorf("torrent URL %s is not under /v2/_shoal/torrents/", torrentURL)
	}
	if !strings.HasPrefix(blobURL, r.URL()+"/v2/_shoal/blobs/"+dgst+"?") {
		t.Errorf("piece URL %s is not under /v2/_shoal/blobs/", blobURL)
	}
	want := blobBytes(t, r.URL(), "paths/app", dgst)
	for _, u := range []string{
		strings.Replace(torrentURL, TorrentPath, LegacyTorrentPath, 1),
	} {
		req, _ := http.NewRequest(http.MethodGet, u, nil)
		resp, body := getBody(t, req)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != driver.MediaTypeTorrent {
			t.Errorf("legacy torrent URL: %d %s", resp.StatusCode, body)
		}
	}
	for _, u := range []string{blobURL, strings.Replace(blobURL, BlobPath, LegacyBlobPath, 1)} {
		resp, body := rangeGet(t, http.MethodGet, u, "bytes=10-99")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want[10:100]) {
			t.Errorf("piece URL %s: %d, %d bytes", u, resp.StatusCode, len(body))
		}
	}
}

// delivery: inline answers the authorized blob GET with the torrent itself:
// distribution's auth decides exactly as for a redirect, nothing else
// changes, and no piece URL goes with it (a front end that passes only
// authorized OCI routes would refuse it).
func TestInlineDelivery(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRegistry(t, regOpts{delivery: "inline", extra: "auth:\n  htpasswd: {realm: shoal, path: " + htpasswd + "}\n"})
	auth := http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}} // alice:secret
	data := bytes.Repeat([]byte("inline layer "), 20_000)
	dgst := uploadAs(t, r.URL(), "inline/app", data, auth)

	ask := func(h http.Header, accept string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/inline/app/blobs/"+dgst, nil)
		for k, v := range h {
			req.Header[k] = v
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b bytes.Buffer
		_, _ = b.ReadFrom(resp.Body)
		return resp, b.Bytes()
	}
	if resp, _ := ask(nil, driver.MediaTypeTorrent); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("anonymous torrent request: %d, want 401", resp.StatusCode)
	}
	if resp, _ := ask(http.Header{"Authorization": {"Basic YWxpY2U6d3Jvbmc="}}, driver.MediaTypeTorrent); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d, want 401", resp.StatusCode)
	}
	resp, body := ask(auth, "application/json, "+driver.MediaTypeTorrent)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != driver.MediaTypeTorrent || resp.Header.Get("Location") != "" {
		t.Fatalf("inline torrent: %d %v %.200q", resp.StatusCode, resp.Header, body)
	}
	if resp.Header.Get(BlobURLHeader) != "" {
		t.Errorf("inline answer carries %s %s", BlobURLHeader, resp.Header.Get(BlobURLHeader))
	}
	mi, err := metainfo.Load(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("inline body is no torrent: %v", err)
	}
	info, err := mi.UnmarshalInfo()
	if err != nil || info.Length != int64(len(data)) || info.Name != strings.TrimPrefix(dgst, "sha256:") {
		t.Fatalf("torrent info: %v %+v", err, info)
	}
	if mi.Announce == "" {
		t.Error("inline torrent has no announce URL")
	}
	// Without the torrent Accept, the blob itself, as ever.
	if resp, body := ask(auth, ""); resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Errorf("plain blob GET: %d, %d bytes", resp.StatusCode, len(body))
	}
	// A missing blob is distribution's 404, not a torrent.
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/inline/app/blobs/"+digestOf([]byte("nope")), nil)
	req.Header = auth.Clone()
	req.Header.Set("Accept", driver.MediaTypeTorrent)
	resp, body = getBody(t, req)
	assertOCIError(t, resp, body, 404, "BLOB_UNKNOWN")
}

func TestDeliveryOption(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "redirect": true, "inline": true, "Inline": false, "307": false} {
		o, err := driver.ParseOptions(map[string]any{"delivery": v})
		if (err == nil) != ok {
			t.Errorf("delivery %q: err %v", v, err)
		}
		if v == "" && o.Delivery != driver.DeliveryRedirect {
			t.Errorf("default delivery %q", o.Delivery)
		}
	}
}
