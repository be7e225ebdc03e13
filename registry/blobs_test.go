package registry

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/internal/token"
)

// blobURLFromTorrent follows a blob's torrent redirect, fetches the metadata
// and returns the piece-range URL its response carries, with the torrent URL.
func blobURLFromTorrent(t *testing.T, r *testRegistry, repo, dgst string) (blobURL, torrentURL string) {
	t.Helper()
	_, loc := torrentRedirect(t, r.URL(), repo, dgst, nil)
	req, _ := http.NewRequest(http.MethodGet, loc, nil)
	resp, body := getBody(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("torrent metadata: %d %s", resp.StatusCode, body)
	}
	u := resp.Header.Get(BlobURLHeader)
	if u == "" {
		t.Fatalf("torrent response lacks %s", BlobURLHeader)
	}
	return u, loc
}

func rangeGet(t *testing.T, method, target string, ranges ...string) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, target, nil)
	for _, rg := range ranges {
		req.Header.Add("Range", rg)
	}
	return getBody(t, req)
}

// pieceBytesMetric reads shoal_registry_piece_bytes_total{reader=...}.
func pieceBytesMetric(t *testing.T, r *testRegistry, reader string) float64 {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, r.URL()+"/metrics", nil)
	_, body := getBody(t, req)
	m := regexp.MustCompile(`(?m)^shoal_registry_piece_bytes_total\{reader="` + reader + `"\} (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, err := strconv.ParseFloat(string(m[1]), 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestBlobEndpoint covers the piece-range endpoint on the filesystem driver:
// the URL handed out beside the torrent, exact bytes for ranges and for the
// whole blob, and refusal of every URL the token was not made for.
func TestBlobEndpoint(t *testing.T) {
	r := startRegistry(t, regOpts{})
	img := pushImage(t, r.Addr, "pieces/app:v1", 300_000, 2)
	digests := layerDigests(t, img)
	dgst, other := digests[0].String(), digests[1].String()
	data := blobBytes(t, r.URL(), "pieces/app", dgst)
	size := int64(len(data))

	blobURL, torrentURL := blobURLFromTorrent(t, r, "pieces/app", dgst)
	u, err := url.Parse(blobURL)
	if err != nil {
		t.Fatal(err)
	}
	if want := r.URL() + BlobPath + dgst; u.Scheme+"://"+u.Host+u.Path != want || u.Query().Get("repo") != "pieces/app" {
		t.Fatalf("%s = %s, want %s?repo=pieces/app&token=…", BlobURLHeader, blobURL, want)
	}
	tu, _ := url.Parse(torrentURL)
	blobTok, torrentTok := u.Query().Get("token"), tu.Query().Get("token")
	if exp := func(tok string) string { e, _, _ := strings.Cut(tok, "."); return e }; exp(blobTok) != exp(torrentTok) {
		t.Errorf("blob URL expires at %s, torrent URL at %s", exp(blobTok), exp(torrentTok))
	}

	// HEAD on the torrent URL carries the header too.
	resp, _ := rangeGet(t, http.MethodHead, torrentURL)
	if resp.Header.Get(BlobURLHeader) == "" {
		t.Error("HEAD on the torrent URL lacks " + BlobURLHeader)
	}

	served := int64(0)
	t.Run("ranges", func(t *testing.T) {
		tests := []struct {
			rng         string
			first, last int64
		}{
			{"bytes=10-65545", 10, 65545},
			{"bytes=0-0", 0, 0},
			{"bytes=65536-131071", 65536, 131071},
			{fmt.Sprintf("bytes=%d-%d", size-1, size-1), size - 1, size - 1},
			{fmt.Sprintf("bytes=%d-%d", size-100, size+1000), size - 100, size - 1}, // last clamped
			{"bytes=299000-", 299000, size - 1},
			{"bytes=-500", size - 500, size - 1},
			{"bytes=-999999999", 0, size - 1},
		}
		for _, tc := range tests {
			resp, body := rangeGet(t, http.MethodGet, blobURL, tc.rng)
			want := data[tc.first : tc.last+1]
			if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, want) {
				t.Errorf("%s: %d, %d bytes (want 206, %d bytes)", tc.rng, resp.StatusCode, len(body), len(want))
				continue
			}
			served += int64(len(body))
			if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes %d-%d/%d", tc.first, tc.last, size) {
				t.Errorf("%s: Content-Range %q", tc.rng, cr)
			}
			if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(want)) {
				t.Errorf("%s: Content-Length %q", tc.rng, cl)
			}
			if d := resp.Header.Get("Docker-Content-Digest"); d != dgst {
				t.Errorf("%s: Docker-Content-Digest %q", tc.rng, d)
			}
		}
	})

	t.Run("whole blob", func(t *testing.T) {
		resp, body := rangeGet(t, http.MethodGet, blobURL)
		if resp.StatusCode != 200 || !bytes.Equal(body, data) || resp.Header.Get("Content-Range") != "" {
			t.Fatalf("whole blob: %d, %d bytes, Content-Range %q", resp.StatusCode, len(body), resp.Header.Get("Content-Range"))
		}
		if digest.FromBytes(body).String() != dgst || resp.Header.Get("Docker-Content-Digest") != dgst {
			t.Fatal("whole blob has another digest")
		}
		served += int64(len(body))
	})

	t.Run("HEAD", func(t *testing.T) {
		resp, body := rangeGet(t, http.MethodHead, blobURL, "bytes=100-199")
		if resp.StatusCode != http.StatusPartialContent || len(body) != 0 || resp.Header.Get("Content-Length") != "100" {
			t.Fatalf("HEAD range: %d, body %d, Content-Length %q", resp.StatusCode, len(body), resp.Header.Get("Content-Length"))
		}
		resp, _ = rangeGet(t, http.MethodHead, blobURL)
		if resp.StatusCode != 200 || resp.Header.Get("Content-Length") != strconv.FormatInt(size, 10) {
			t.Fatalf("HEAD: %d, Content-Length %q", resp.StatusCode, resp.Header.Get("Content-Length"))
		}
	})

	t.Run("bad ranges", func(t *testing.T) {
		for _, rngs := range [][]string{
			{"bytes=0-1,5-6"},
			{"bytes=0-1", "bytes=5-6"},
			{"bytes=5-1"},
			{fmt.Sprintf("bytes=%d-", size)},
			{fmt.Sprintf("bytes=%d-%d", size+10, size+20)},
			{"bytes=-0"},
			{"bytes=+1-2"},
			{"bytes=a-b"},
			{"bytes=1"},
			{"items=0-1"},
			{""},
		} {
			resp, body := rangeGet(t, http.MethodGet, blobURL, rngs...)
			assertOCIError(t, resp, body, http.StatusRequestedRangeNotSatisfiable, "RANGE_INVALID")
			if cr := resp.Header.Get("Content-Range"); cr != fmt.Sprintf("bytes */%d", size) {
				t.Errorf("%q: Content-Range %q", rngs, cr)
			}
		}
	})

	keys, err := token.NewKeys(harnessHTTPSecret) // the harness's http.secret
	if err != nil {
		t.Fatal(err)
	}
	with := func(path string, q map[string]string) string {
		v := u.Query()
		for k, x := range q {
			v.Set(k, x)
		}
		return r.URL() + path + "?" + v.Encode()
	}
	inAMinute := time.Now().Add(time.Minute)
	missing := "sha256:" + strings.Repeat("b", 64)
	t.Run("refused", func(t *testing.T) {
		tests := []struct {
			name   string
			url    string
			status int
			code   string
		}{
			{"no token", with(BlobPath+dgst, map[string]string{"token": ""}), 401, "UNAUTHORIZED"},
			{"tampered token", with(BlobPath+dgst, map[string]string{"token": blobTok[:len(blobTok)-2] + "AA"}), 401, "UNAUTHORIZED"},
			{"garbage token", with(BlobPath+dgst, map[string]string{"token": "not-a-token"}), 401, "UNAUTHORIZED"},
			{"torrent token", with(BlobPath+dgst, map[string]string{"token": torrentTok}), 401, "UNAUTHORIZED"},
			{"other repository", with(BlobPath+dgst, map[string]string{"repo": "other/app"}), 401, "UNAUTHORIZED"},
			{"other digest", with(BlobPath+other, nil), 401, "UNAUTHORIZED"},
			{"expired", with(BlobPath+dgst, map[string]string{"token": keys.Sign(purposeBlob, urlSubject("pieces/app", digest.Digest(dgst)), time.Now().Add(-2*time.Second))}), 401, "UNAUTHORIZED"},
			{"foreign secret", with(BlobPath+dgst, map[string]string{"token": mustKeys(t, "another-secret").Sign(purposeBlob, urlSubject("pieces/app", digest.Digest(dgst)), inAMinute)}), 401, "UNAUTHORIZED"},
			{"malformed digest", with(BlobPath+"sha256:xyz", nil), 400, "DIGEST_INVALID"},
			{"missing blob", with(BlobPath+missing, map[string]string{"token": keys.Sign(purposeBlob, urlSubject("pieces/app", digest.Digest(missing)), inAMinute)}), 404, "BLOB_UNKNOWN"},
			// And the other way round: a blob token opens no torrent.
			{"blob token on torrent URL", with(TorrentPath+dgst, nil), 401, "UNAUTHORIZED"},
		}
		for _, tc := range tests {
			t.Run(tc.name, func(t *testing.T) {
				resp, body := rangeGet(t, http.MethodGet, tc.url, "bytes=0-99")
				assertOCIError(t, resp, body, tc.status, tc.code)
				if tok := u.Query().Get("token"); strings.Contains(string(body), tok) || strings.Contains(string(body), torrentTok) {
					t.Errorf("error body leaks a token: %s", body)
				}
			})
		}
		// The refusals do not depend on the method.
		resp, _ := rangeGet(t, http.MethodHead, with(BlobPath+dgst, map[string]string{"token": torrentTok}))
		if resp.StatusCode != 401 {
			t.Errorf("HEAD with a torrent token: %d", resp.StatusCode)
		}
	})

	if got := pieceBytesMetric(t, r, "file"); got != float64(served) {
		t.Errorf("shoal_registry_piece_bytes_total{reader=\"file\"} = %v, want %d", got, served)
	}
}

func mustKeys(t *testing.T, secret string) *token.Keys {
	t.Helper()
	k, err := token.NewKeys(secret)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// TestBlobEndpointStreamDriver: a storage driver without files (inmemory
// here, S3 in production) is served through its reader, same bytes.
func TestBlobEndpointStreamDriver(t *testing.T) {
	r := startRegistry(t, regOpts{storage: "inmemory: {}"})
	img := pushImage(t, r.Addr, "mem/app:v1", 200_000, 1)
	dgst := layerDigests(t, img)[0].String()
	data := blobBytes(t, r.URL(), "mem/app", dgst)
	blobURL, _ := blobURLFromTorrent(t, r, "mem/app", dgst)

	resp, body := rangeGet(t, http.MethodGet, blobURL, "bytes=70000-150000")
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[70000:150001]) {
		t.Fatalf("range: %d, %d bytes", resp.StatusCode, len(body))
	}
	resp, body = rangeGet(t, http.MethodGet, blobURL)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("whole: %d, %d bytes", resp.StatusCode, len(body))
	}
	if got, want := pieceBytesMetric(t, r, "stream"), float64(80001+len(data)); got != want {
		t.Errorf("shoal_registry_piece_bytes_total{reader=\"stream\"} = %v, want %v", got, want)
	}
}
