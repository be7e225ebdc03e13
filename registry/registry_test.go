package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/shoalproject/shoal/internal/peerwire/peerwiretest"
)

func getBody(t *testing.T, req *http.Request) (*http.Response, []byte) {
	t.Helper()
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, b
}

func fetchMetainfo(t *testing.T, location string) *metainfo.MetaInfo {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, location, nil)
	resp, body := getBody(t, req)
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/x-bittorrent" {
		t.Fatalf("metadata: %d %s %s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
	mi, err := metainfo.Load(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("metadata does not parse: %v", err)
	}
	return mi
}

func blobBytes(t *testing.T, base, repo, dgst string) []byte {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/blobs/"+dgst, nil)
	resp, b := getBody(t, req)
	if resp.StatusCode != 200 {
		t.Fatalf("GET blob %s: %d", dgst, resp.StatusCode)
	}
	return b
}

// TestPushPullTorrent covers the whole P2P path of one registry: bytes for
// ordinary GETs, a redirect and a correct .torrent for torrent GETs, and a
// real BitTorrent client downloading the blob from the registry's seeder.
func TestPushPullTorrent(t *testing.T) {
	r := startRegistry(t, regOpts{})
	img := pushImage(t, r.Addr, "team/app:v1", 300_000, 3)

	// An index too: its children's blobs must be seeded on push.
	idx, err := random.Index(100_000, 2, 2)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(r.Addr+"/team/multi:v1", name.Insecure)
	if err := remote.WriteIndex(ref, idx); err != nil {
		t.Fatal(err)
	}

	for _, d := range layerDigests(t, img) {
		dgst := d.String()
		data := blobBytes(t, r.URL(), "team/app", dgst)
		if sum := sha256.Sum256(data); "sha256:"+hex.EncodeToString(sum[:]) != dgst {
			t.Fatalf("plain GET of %s returned other bytes", dgst)
		}

		// Range still works for ordinary clients.
		req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/team/app/blobs/"+dgst, nil)
		req.Header.Set("Range", "bytes=10-19")
		resp, part := getBody(t, req)
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(part, data[10:20]) {
			t.Fatalf("range GET: %d, %d bytes", resp.StatusCode, len(part))
		}

		// HEAD with the torrent Accept header is an ordinary HEAD.
		req, _ = http.NewRequest(http.MethodHead, r.URL()+"/v2/team/app/blobs/"+dgst, nil)
		req.Header.Set("Accept", "application/x-bittorrent")
		resp, _ = getBody(t, req)
		if resp.StatusCode != 200 || resp.Header.Get("Location") != "" {
			t.Fatalf("HEAD with torrent Accept: %d location %q", resp.StatusCode, resp.Header.Get("Location"))
		}

		resp, loc := torrentRedirect(t, r.URL(), "team/app", dgst, nil)
		if resp.StatusCode != http.StatusTemporaryRedirect || loc == "" {
			t.Fatalf("torrent GET: %d location %q", resp.StatusCode, loc)
		}
		mi := fetchMetainfo(t, loc)
		info, err := mi.UnmarshalInfo()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := metainfo.GeneratePieces(bytes.NewReader(data), info.PieceLength, nil)
		if !bytes.Equal(info.Pieces, want) || info.Length != int64(len(data)) || info.PieceLength != 65536 {
			t.Fatalf("metainfo of %s does not describe the blob", dgst)
		}
		if info.Private == nil || !*info.Private {
			t.Error("torrent is not private")
		}
		if au, _ := url.Parse(mi.Announce); au == nil || au.Query().Get("token") == "" || !strings.HasPrefix(mi.Announce, "http://127.0.0.1:9/announce?") {
			t.Errorf("announce %q lacks the tracker URL with a token", mi.Announce)
		}
		if len(mi.UrlList) != 1 || mi.UrlList[0] != r.URL()+"/v2/team/app/blobs/"+dgst {
			t.Errorf("url-list %v", mi.UrlList)
		}
	}

	// One layer, downloaded by an independent client from the seeder alone.
	d := layerDigests(t, img)[0].String()
	_, loc := torrentRedirect(t, r.URL(), "team/app", d, nil)
	got := downloadFromSeeder(t, fetchMetainfo(t, loc), r.SeederAddr)
	if sum := sha256.Sum256(got); "sha256:"+hex.EncodeToString(sum[:]) != d {
		t.Fatalf("swarm download of %s has the wrong digest", d)
	}

	// The index's child blobs were put into seeding on push.
	m, _ := idx.IndexManifest()
	for _, child := range m.Manifests {
		img, _ := idx.Image(child.Digest)
		cfgName, _ := img.ConfigName()
		resp, loc := torrentRedirect(t, r.URL(), "team/multi", cfgName.String(), nil)
		if resp.StatusCode != http.StatusTemporaryRedirect {
			t.Fatalf("index child config torrent: %d", resp.StatusCode)
		}
		fetchMetainfo(t, loc)
	}
}

// downloadFromSeeder runs a separate anacrolix client, a member of the
// registry's cluster, with web seeds and trackers off and the registry's
// seeder as its only peer.
func downloadFromSeeder(t *testing.T, mi *metainfo.MetaInfo, seeder string) []byte {
	t.Helper()
	b, n := peerwiretest.Fetch(t, peerwiretest.Client(t, testClusterSecret), mi, seeder, 60*time.Second)
	if b == nil {
		t.Fatalf("download from seeder stalled after %d bytes", n)
	}
	return b
}

// TestUploadsMakeIdenticalMetainfo pushes the same kind of blob four ways and
// checks each stored metainfo equals hashing the final blob.
func TestUploadsMakeIdenticalMetainfo(t *testing.T) {
	r := startRegistry(t, regOpts{})
	blob := func(seed byte, n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i*7) ^ seed
		}
		return b
	}
	check := func(repo string, data []byte) {
		t.Helper()
		sum := sha256.Sum256(data)
		dgst := "sha256:" + hex.EncodeToString(sum[:])
		// Made during the upload, not lazily by the request below.
		hx := hex.EncodeToString(sum[:])
		if _, err := os.Stat(filepath.Join(r.Root, "docker/registry/v2/blobs/sha256", hx[:2], hx, "torrent")); err != nil {
			t.Errorf("%s: no metainfo beside the blob after the upload: %v", repo, err)
		}
		resp, loc := torrentRedirect(t, r.URL(), repo, dgst, nil)
		if resp.StatusCode != http.StatusTemporaryRedirect {
			t.Fatalf("%s: torrent GET %d", repo, resp.StatusCode)
		}
		info, err := fetchMetainfo(t, loc).UnmarshalInfo()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := metainfo.GeneratePieces(bytes.NewReader(data), 65536, nil)
		if !bytes.Equal(info.Pieces, want) || info.Length != int64(len(data)) {
			t.Errorf("%s: metainfo differs from hashing the final blob", repo)
		}
	}

	mono := blob(1, 200_000)
	uploadMonolithic(t, r.URL(), "up/mono", mono)
	check("up/mono", mono)

	chunked := blob(2, 333_333) // chunks that do not align with pieces
	uploadChunked(t, r.URL(), "up/chunked", chunked, []int{70_000, 1, 100_000, 163_332}, nil)
	check("up/chunked", chunked)

	// Cross-repository mount of an existing blob.
	sum := sha256.Sum256(mono)
	req, _ := http.NewRequest(http.MethodPost, r.URL()+"/v2/up/mounted/blobs/uploads/?mount=sha256:"+hex.EncodeToString(sum[:])+"&from=up/mono", nil)
	resp, _ := getBody(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("mount: %d", resp.StatusCode)
	}
	check("up/mounted", mono)

	// A chunked upload interrupted by a registry crash, resumed afterwards.
	resumed := blob(3, 250_000)
	uploadChunked(t, r.URL(), "up/resumed", resumed, []int{100_000, 150_000}, func() {
		r.proc.Kill()
		r.Start()
	})
	check("up/resumed", resumed)
}

func uploadMonolithic(t *testing.T, base, repo string, data []byte) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, body := getBody(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", resp.StatusCode, body)
	}
	sum := sha256.Sum256(data)
	u, _ := url.Parse(base)
	next, _ := u.Parse(resp.Header.Get("Location"))
	q := next.Query()
	q.Set("digest", "sha256:"+hex.EncodeToString(sum[:]))
	next.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, next.String(), bytes.NewReader(data))
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, body = getBody(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("monolithic upload: %d %s", resp.StatusCode, body)
	}
}

// uploadChunked PATCHes the chunks one request each, calls between after the
// first chunk, then PUTs to commit.
func uploadChunked(t *testing.T, base, repo string, data []byte, chunks []int, between func()) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, base+"/v2/"+repo+"/blobs/uploads/", nil)
	resp, body := getBody(t, req)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", resp.StatusCode, body)
	}
	loc := resp.Header.Get("Location")
	off := 0
	for i, n := range chunks {
		u, _ := url.Parse(base)
		next, _ := u.Parse(loc)
		req, _ := http.NewRequest(http.MethodPatch, next.String(), bytes.NewReader(data[off:off+n]))
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
		resp, body := getBody(t, req)
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("PATCH chunk %d: %d %s", i, resp.StatusCode, body)
		}
		loc = resp.Header.Get("Location")
		off += n
		if i == 0 && between != nil {
			between()
		}
	}
	sum := sha256.Sum256(data)
	u, _ := url.Parse(base)
	next, _ := u.Parse(loc)
	q := next.Query()
	q.Set("digest", "sha256:"+hex.EncodeToString(sum[:]))
	next.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, next.String(), nil)
	resp, body = getBody(t, req)
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("commit upload: %d %s", resp.StatusCode, body)
	}
}

// TestSeederDisabled: with the seeder off, pushes still work and torrents
// are still handed out (peers and web seeds serve them).
func TestSeederDisabled(t *testing.T) {
	r := startRegistry(t, regOpts{noSeeder: true})
	img := pushImage(t, r.Addr, "noseed/app:v1", 50_000, 2)
	d := layerDigests(t, img)[0].String()
	resp, loc := torrentRedirect(t, r.URL(), "noseed/app", d, nil)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("torrent GET with seeder disabled: %d", resp.StatusCode)
	}
	info, err := fetchMetainfo(t, loc).UnmarshalInfo()
	if want := int64(len(blobBytes(t, r.URL(), "noseed/app", d))); err != nil || info.Length != want {
		t.Fatalf("metainfo: %v, length %d", err, info.Length)
	}
}
