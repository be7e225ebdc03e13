package registry

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// testClusterSecret is the join secret of every registry this test binary
// starts, and of the member clients that talk to their seeders.
var testClusterSecret = secret.Generate()

// testRegistry is a `shoal registry` process on loopback.
type testRegistry struct {
	t          *testing.T
	Addr       string
	Root       string
	SeederAddr string
	config     string
	proc       *testenv.Process
}

type regOpts struct {
	root      string
	urlExpiry string
	extra     string // extra top-level YAML (auth)
	noP2P     bool
	logLevel  string
	noSeeder  bool
	storage   string // storage driver entry in place of filesystem, e.g. "inmemory: {}"
	// urlSecrets are the p2p middleware's secrets; empty: http.secret
	// (harnessHTTPSecret) signs URLs.
	urlSecrets []string
	// addr and seederAddr, when set, restart a registry where it was.
	addr, seederAddr string
	pieceLen         int // piece length of new metainfo; 0: 64 KiB
	delivery         string
}

// The harness's secrets: random, as the registry refuses guessable ones.
var (
	harnessHTTPSecret    = secret.Generate()
	harnessTrackerSecret = secret.Generate()
)

func startRegistry(t *testing.T, o regOpts) *testRegistry {
	t.Helper()
	if o.root == "" {
		o.root = t.TempDir()
	}
	if o.logLevel == "" {
		o.logLevel = "info"
	}
	if o.urlExpiry == "" {
		o.urlExpiry = "5m"
	}
	storage := fmt.Sprintf("filesystem: {rootdirectory: %q}", o.root)
	if o.storage != "" {
		storage = o.storage
	}
	if o.addr == "" {
		o.addr = testenv.FreeAddr(t)
	}
	if o.seederAddr == "" {
		o.seederAddr = testenv.FreeAddr(t)
	}
	if o.pieceLen == 0 {
		o.pieceLen = 65536
	}
	r := &testRegistry{t: t, Addr: o.addr, Root: o.root, SeederAddr: o.seederAddr}
	mw := fmt.Sprintf(`middleware:
  storage:
    - name: p2p
      options:
        piecelength: %d
        urlexpiry: %s
        tracker: {url: "http://127.0.0.1:9/announce", secrets: [%s]}
        seeder: {listen: %q, idletimeout: 1m, disabled: %t}
        cluster: {secret: %s}
`, o.pieceLen, o.urlExpiry, harnessTrackerSecret, r.SeederAddr, o.noSeeder, testClusterSecret)
	if o.delivery != "" {
		mw += fmt.Sprintf("        delivery: %s\n", o.delivery)
	}
	if len(o.urlSecrets) > 0 {
		mw += fmt.Sprintf("        secrets: [%s]\n", strings.Join(o.urlSecrets, ", "))
	}
	if o.noP2P {
		mw = ""
	}
	cfg := fmt.Sprintf(`version: 0.1
log: {level: %s, accesslog: {disabled: true}}
http: {addr: %q, secret: %s}
storage:
  %s
  delete: {enabled: true}
%s%s`, o.logLevel, r.Addr, harnessHTTPSecret, storage, mw, o.extra)
	r.config = filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(r.config, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	r.Start()
	return r
}

func (r *testRegistry) Start() {
	r.t.Helper()
	r.proc = testenv.Start(r.t, "shoal registry", testenv.ShoalBinary(r.t), []string{"registry", "--config", r.config})
	testenv.WaitHTTP(r.t, r.proc, "http://"+r.Addr+"/v2/", 30*time.Second)
}

func (r *testRegistry) URL() string { return "http://" + r.Addr }

// pushImage pushes a random image with the given number of layers.
func pushImage(t *testing.T, addr, repo string, layerSize int64, layers int64) v1.Image {
	return testenv.PushRandomImage(t, addr+"/"+repo, layerSize, layers)
}

// layerDigests lists the layers' digests, then the config's.
func layerDigests(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	return append(testenv.LayerDigests(t, img), cfg)
}

var noRedirect = &http.Client{
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       30 * time.Second,
}

// torrentRedirect asks for a blob's torrent and returns the Location.
func torrentRedirect(t *testing.T, base, repo, dgst string, header http.Header) (*http.Response, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/"+repo+"/blobs/"+dgst, nil)
	for k, v := range header {
		req.Header[k] = v
	}
	req.Header.Set("Accept", "application/x-bittorrent")
	resp, err := noRedirect.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp, resp.Header.Get("Location")
}

// assertOCIError checks the status and that the body is OCI error JSON with code.
func assertOCIError(t *testing.T, resp *http.Response, body []byte, status int, code string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status %d, want %d (body %s)", resp.StatusCode, status, body)
	}
	if !strings.Contains(string(body), `"code":"`+code+`"`) {
		t.Errorf("body %s lacks OCI error code %s", body, code)
	}
}
