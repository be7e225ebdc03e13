package registry

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoalproject/shoal/internal/testenv"
)

const (
	s3Access = "shoal-test-access"
	s3Secret = "shoal-test-secret-key"
	s3Bucket = "shoal-blobs"
)

// s3Server is a Versity S3 gateway (posix backend) on loopback, behind a
// reverse proxy that counts ranged object reads, so tests can tell how many
// requests the registry made of the object store.
type s3Server struct {
	URL    string // the proxy, which registries use as regionendpoint
	Dir    string // the posix backend's root; objects are files under Dir/bucket
	ranged atomic.Int64
}

func startS3(t *testing.T) *s3Server {
	t.Helper()
	bin := testenv.ToolBinary(t, "VERSITYGW_BIN")
	s := &s3Server{Dir: t.TempDir()}
	if err := os.Mkdir(filepath.Join(s.Dir, s3Bucket), 0o755); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	p := testenv.Start(t, "versitygw", bin, []string{"--port", addr, "--access", s3Access, "--secret", s3Secret, "posix", s.Dir})
	testenv.WaitTCP(t, p, addr, 30*time.Second)
	target, _ := url.Parse("http://" + addr)
	rp := httputil.NewSingleHostReverseProxy(target)
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && r.Header.Get("Range") != "" && strings.HasSuffix(r.URL.Path, "/data") {
			s.ranged.Add(1)
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(proxy.Close)
	s.URL = proxy.URL
	return s
}

// storage is the registry's storage entry for this server.
func (s *s3Server) storage() string {
	return fmt.Sprintf(`s3: {bucket: %s, region: us-east-1, regionendpoint: %q, forcepathstyle: true, secure: false, accesskey: %s, secretkey: %s, rootdirectory: /shoal}`,
		s3Bucket, s.URL, s3Access, s3Secret)
}

// object is the path of a registry object in the backend.
func (s *s3Server) object(p string) string {
	return filepath.Join(s.Dir, s3Bucket, "shoal", "docker/registry/v2", p)
}

func blobObject(dgst string, name string) string {
	hex := strings.TrimPrefix(dgst, "sha256:")
	return filepath.Join("blobs/sha256", hex[:2], hex, name)
}

// TestS3 runs the registry on the s3 storage driver against a real S3
// server: push, metainfo made while uploading, plain pulls redirected to
// presigned URLs, seeding through the driver with one ranged read per piece,
// an agent taking the blob over the signed piece endpoint, and garbage
// collection by the upstream registry removing blobs with their metainfo.
func TestS3(t *testing.T) {
	s3 := startS3(t)
	r := startRegistry(t, regOpts{storage: s3.storage()})
	const layerSize = 1 << 20 // 16 pieces of 64 KiB
	img := pushImage(t, r.Addr, "s3/app:v1", layerSize, 2)
	digests := layerDigests(t, img)

	for _, d := range digests {
		dgst := d.String()
		// Metainfo was written beside the blob during the upload, not on
		// first torrent request.
		if _, err := os.Stat(s3.object(blobObject(dgst, "torrent"))); err != nil {
			t.Fatalf("metainfo of %s not made in flight: %v", dgst, err)
		}
		// A plain GET is distribution's presigned redirect to the store.
		req, _ := http.NewRequest(http.MethodGet, r.URL()+"/v2/s3/app/blobs/"+dgst, nil)
		resp, err := noRedirect.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		loc := resp.Header.Get("Location")
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(loc, s3.URL+"/") || !strings.Contains(loc, "X-Amz-Signature=") {
			t.Fatalf("plain GET of %s: %d %q, want a presigned redirect to the store", dgst, resp.StatusCode, loc)
		}
		data := followBlob(t, r, "s3/app", dgst)
		if sum := sha256.Sum256(data); "sha256:"+hex.EncodeToString(sum[:]) != dgst {
			t.Fatalf("presigned GET of %s returned other bytes", dgst)
		}
		// Torrent redirect and metainfo describing the blob.
		resp, tloc := torrentRedirect(t, r.URL(), "s3/app", dgst, nil)
		if resp.StatusCode != http.StatusTemporaryRedirect || !strings.HasPrefix(tloc, r.URL()+TorrentPath) {
			t.Fatalf("torrent GET of %s: %d %q", dgst, resp.StatusCode, tloc)
		}
		info, err := fetchMetainfo(t, tloc).UnmarshalInfo()
		if err != nil {
			t.Fatal(err)
		}
		want, _ := metainfo.GeneratePieces(bytes.NewReader(data), info.PieceLength, nil)
		if !bytes.Equal(info.Pieces, want) || info.Length != int64(len(data)) {
			t.Fatalf("metainfo of %s does not describe the blob", dgst)
		}
	}

	layer := digests[0].String()
	t.Run("seeding reads one range per piece", func(t *testing.T) {
		_, loc := torrentRedirect(t, r.URL(), "s3/app", layer, nil)
		mi := fetchMetainfo(t, loc)
		info, _ := mi.UnmarshalInfo()
		before := s3.ranged.Load()
		got := downloadFromSeeder(t, mi, r.SeederAddr)
		if sum := sha256.Sum256(got); "sha256:"+hex.EncodeToString(sum[:]) != layer {
			t.Fatal("swarm download from the S3-backed seeder has the wrong digest")
		}
		reads, pieces := s3.ranged.Load()-before, int64(info.NumPieces())
		chunks := int64(info.Length) / (16 << 10)
		t.Logf("seeding %d pieces (%d chunks of 16 KiB) took %d ranged reads of the store", pieces, chunks, reads)
		// One per piece; a little slack for a piece evicted while the peer
		// interleaved requests for more than the cache holds.
		if reads > pieces+pieces/8 {
			t.Fatalf("%d ranged reads for %d pieces: not reading ahead per piece", reads, pieces)
		}
	})

	t.Run("agent takes the registry share over the piece endpoint", func(t *testing.T) {
		blobURL, _ := blobURLFromTorrent(t, r, "s3/app", layer)
		data := followBlob(t, r, "s3/app", layer)
		resp, body := rangeGet(t, http.MethodGet, blobURL, "bytes=65536-196607")
		if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, data[65536:196608]) {
			t.Fatalf("piece range from S3: %d, %d bytes", resp.StatusCode, len(body))
		}
		a := startS3Agent(t, r)
		resp, err := http.Get("http://" + a + "/v2/s3/app/blobs/" + layer)
		if err != nil {
			t.Fatal(err)
		}
		var buf bytes.Buffer
		buf.ReadFrom(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !bytes.Equal(buf.Bytes(), data) {
			t.Fatalf("pull through the agent: %d, %d bytes", resp.StatusCode, buf.Len())
		}
		if got := metricSum(t, "http://"+a+"/metrics", "shoal_agent_registry_piece_bytes_total"); got < float64(len(data)) {
			t.Fatalf("agent took %v bytes over the piece endpoint, want the whole %d-byte blob", got, len(data))
		}
		if got := pieceBytesMetric(t, r, "stream"); got < float64(len(data)) {
			t.Fatalf("registry served %v bytes through the driver's stream reader", got)
		}
	})

	t.Run("garbage collection removes blobs and metainfo", func(t *testing.T) {
		regBin := testenv.ToolBinary(t, "REGISTRY_BIN")
		// Untag: delete the manifest by digest.
		m, _ := img.Digest()
		req, _ := http.NewRequest(http.MethodDelete, r.URL()+"/v2/s3/app/manifests/"+m.String(), nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusAccepted {
			t.Fatalf("manifest DELETE: %d", resp.StatusCode)
		}
		out, err := exec.Command(regBin, "garbage-collect", r.config).CombinedOutput()
		if err != nil {
			t.Fatalf("registry garbage-collect: %v\n%s", err, out)
		}
		for _, d := range digests {
			dir := filepath.Dir(s3.object(blobObject(d.String(), "data")))
			if ents, err := os.ReadDir(dir); err == nil && len(ents) > 0 {
				t.Errorf("blob %s still in the store after GC: %v", d, ents)
			}
		}
		// And the registry says so.
		resp, err = http.Head(r.URL() + "/v2/s3/app/blobs/" + layer)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("HEAD after GC: %d", resp.StatusCode)
		}
	})
}

// startS3Agent starts a `shoal agent` in front of r, alone (no tracker it
// can reach), so it takes every piece from the registry's piece endpoint.
func startS3Agent(t *testing.T, r *testRegistry) string {
	t.Helper()
	mirror, control := testenv.FreeAddr(t), testenv.FreeAddr(t)
	cfg := fmt.Sprintf(`node: {id: s3-agent}
cluster: {secret: %q}
mirror: {addr: %q}
control: {addr: %q}
upstreams: [{host: %q, url: %q, default: true}]
cache: {dir: %q, maxBytes: 1073741824}
p2p: {enabled: true, addr: "127.0.0.1:0", stallTimeout: 2s}
`, testClusterSecret, mirror, control, r.Addr, r.URL(), t.TempDir())
	path := filepath.Join(t.TempDir(), "agent.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "shoal agent", testenv.ShoalBinary(t), []string{"agent", "--config", path})
	testenv.WaitHTTP(t, p, "http://"+mirror+"/healthz", 30*time.Second)
	return mirror
}

// metricSum adds every series of a counter.
func metricSum(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	var sum float64
	for _, m := range regexp.MustCompile(`(?m)^`+name+`(?:\{[^}]*\})? (\S+)$`).FindAllSubmatch(buf.Bytes(), -1) {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += v
	}
	return sum
}

// followBlob GETs a blob following the registry's redirect to the store, as
// every client of an S3-backed registry does.
func followBlob(t *testing.T, r *testRegistry, repo, dgst string) []byte {
	t.Helper()
	resp, err := http.Get(r.URL() + "/v2/" + repo + "/blobs/" + dgst)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(resp.Body); err != nil || resp.StatusCode != 200 {
		t.Fatalf("GET blob %s: %d %v", dgst, resp.StatusCode, err)
	}
	return buf.Bytes()
}
