package registry

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/internal/metrics/metricstest"
)

// inProcessOptions are of a seeding p2p registry on a filesystem root, as
// `shoal run` has it, on ports of its own.
func inProcessOptions(t *testing.T) EmbeddedOptions {
	return EmbeddedOptions{
		DataDir: t.TempDir(), Addr: "127.0.0.1:0", SeederListen: "127.0.0.1:0",
		TrackerURL: "http://127.0.0.1:9/announce", TrackerSecret: harnessTrackerSecret,
		HTTPSecret: harnessHTTPSecret, ClusterSecret: testClusterSecret,
	}
}

func embeddedConfig(t *testing.T, o EmbeddedOptions) *configuration.Configuration {
	t.Helper()
	cfg, err := EmbeddedConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// serve runs s on a loopback port until the test ends and returns its
// base URL.
func serve(t *testing.T, s *Server) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return serveOn(t, s, l)
}

// serveOn runs s on l until the test ends, then checks that Serve returns
// and that Close after it is harmless.
func serveOn(t *testing.T, s *Server, l net.Listener) string {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Serve did not return after cancel")
		}
		if err := s.Close(); err != nil {
			t.Errorf("second Close: %v", err)
		}
	})
	base := "http://" + l.Addr().String()
	// Accepted once Serve has started the seeder and serves.
	if resp, body := rangeGet(t, http.MethodGet, base+"/healthz"); resp.StatusCode != http.StatusOK {
		t.Fatalf("/healthz: %d %s", resp.StatusCode, body)
	}
	return base
}

// Two registries from one configuration in one process: New leaves the
// configuration as it was (it used to append Shoal's middlewares to it),
// each has its own metrics and seeder, and every metric family a push and
// a P2P pull produce is named and documented.
func TestTwoRegistriesOneConfig(t *testing.T) {
	opts := inProcessOptions(t)
	cfg := embeddedConfig(t, opts)
	process := metrics.NewProcessRegistry()
	a, err := New(cfg, Deps{ProcessMetrics: process})
	if err != nil {
		t.Fatal(err)
	}
	b, err := New(cfg, Deps{ProcessMetrics: process})
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(cfg, embeddedConfig(t, opts)) {
		t.Fatal("New changed its configuration (its middleware lists or options)")
	}
	baseA, baseB := serve(t, a), serve(t, b)
	if a.SeederPort() == 0 || a.SeederPort() == b.SeederPort() {
		t.Fatalf("seeder ports %d and %d, want two seeders", a.SeederPort(), b.SeederPort())
	}

	addrA := strings.TrimPrefix(baseA, "http://")
	img := pushImage(t, addrA, "two/app:v1", 200_000, 1)
	dgst := layerDigests(t, img)[0].String()
	blobURL, torrentURL := blobURLFromTorrent(t, &testRegistry{t: t, Addr: addrA}, "two/app", dgst)
	if resp, body := rangeGet(t, http.MethodGet, blobURL, "bytes=0-99"); resp.StatusCode != http.StatusPartialContent || len(body) != 100 {
		t.Fatalf("piece range: %d, %d bytes", resp.StatusCode, len(body))
	}
	got := downloadFromSeeder(t, fetchMetainfo(t, torrentURL), "127.0.0.1:"+strconv.Itoa(a.SeederPort()))
	if len(got) == 0 {
		t.Fatal("nothing from the seeder")
	}
	// Seeding a pushed manifest's blobs runs after the push answers.
	for deadline := time.Now().Add(10 * time.Second); counterValue(t, a.metrics.pushed) == 0; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the push was never seeded")
		}
	}
	metricstest.Documented(t, "registry", a.metricsReg)

	// b saw none of it: its own counters, its own /metrics.
	if n := counterValue(t, b.metrics.pieceBytes.WithLabelValues("file")); n != 0 {
		t.Errorf("second registry counted %v piece bytes", n)
	}
	for base, want := range map[string]bool{baseA: true, baseB: false} {
		resp, body := rangeGet(t, http.MethodGet, base+"/metrics")
		has := strings.Contains(string(body), `shoal_registry_piece_bytes_total{reader="file"} 100`)
		if resp.StatusCode != 200 || has != want || !strings.Contains(string(body), "go_goroutines") {
			t.Errorf("%s/metrics: %d, piece bytes counted %t (want %t), process metrics %t",
				base, resp.StatusCode, has, want, strings.Contains(string(body), "go_goroutines"))
		}
	}
}

// /healthz is httpx's report with the storage driver and the seeder; misses
// on Shoal's own routes answer the one JSON error shape, and registry
// routes keep OCI errors.
func TestHealthAndShoalRoutes(t *testing.T) {
	s, err := New(embeddedConfig(t, inProcessOptions(t)), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s)

	resp, body := rangeGet(t, http.MethodGet, base+"/healthz")
	var rep httpx.HealthReport
	if err := json.Unmarshal(body, &rep); err != nil || resp.StatusCode != 200 || rep.Status != "ok" || rep.Component != "registry" ||
		rep.Checks["storage"].Status != "ok" || rep.Checks["seeder"].Status != "ok" {
		t.Fatalf("/healthz: %d %s", resp.StatusCode, body)
	}

	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{http.MethodGet, "/_shoal/nothing", 404, httpx.CodeNotFound},
		{http.MethodGet, "/nothing", 404, httpx.CodeNotFound},
		{http.MethodPost, "/healthz", 405, httpx.CodeMethodNotAllowed},
		{http.MethodDelete, LegacyTorrentPath + "sha256:" + strings.Repeat("a", 64), 405, httpx.CodeMethodNotAllowed},
	} {
		resp, body := rangeGet(t, c.method, base+c.path)
		var e httpx.ErrorBody
		if err := json.Unmarshal(body, &e); err != nil || resp.StatusCode != c.status || e.Code != c.code {
			t.Errorf("%s %s: %d %s, want %d with code %s", c.method, c.path, resp.StatusCode, body, c.status, c.code)
		}
	}
	resp, body = rangeGet(t, http.MethodGet, base+"/v2/no/such/manifests/latest")
	assertOCIError(t, resp, body, 404, "MANIFEST_UNKNOWN")
	// Shoal's routes under /v2/ answer as the registry does there.
	resp, body = rangeGet(t, http.MethodDelete, base+TorrentPath+"sha256:"+strings.Repeat("a", 64))
	assertOCIError(t, resp, body, 405, "UNSUPPORTED")
	// A miss there is distribution's, as any unknown /v2/ path.
	if resp, _ := rangeGet(t, http.MethodGet, base+"/v2/_shoal/nothing"); resp.StatusCode != 404 {
		t.Errorf("GET /v2/_shoal/nothing: %d, want 404", resp.StatusCode)
	}
	// Upstream's "/" stays what load balancers of a registry:3 probe.
	if resp, _ := rangeGet(t, http.MethodGet, base+"/"); resp.StatusCode != 200 {
		t.Errorf("GET /: %d, want upstream's 200", resp.StatusCode)
	}

	// Serve's Close stops the seeder; the health check then says so.
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	rep = s.healthCheck().Report(context.Background())
	if rep.Status != "fail" || rep.Checks["seeder"].Status != "fail" {
		t.Errorf("after Close: %+v", rep)
	}
}

func counterValue(t *testing.T, c prometheus.Metric) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

// TestHealthzBoundedAndQuiet is issue 22's finding 9: /healthz answers
// anyone, so a burst of requests must cost the storage one listing per
// second, not one each, and a failing storage's error (which names paths,
// buckets, endpoints) stays in the log.
func TestHealthzBoundedAndQuiet(t *testing.T) {
	o := inProcessOptions(t)
	s, err := New(embeddedConfig(t, o), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	base := serve(t, s)
	// Every listing fails, with an error that names the backend as a real
	// one would (an S3 endpoint, a bucket, a path).
	s.oci.d = failingList{StorageDriver: s.oci.d}
	// serve's readiness probe left a report that answers for up to
	// healthShare; the first one after it sees the failure.
	var resp *http.Response
	var body []byte
	deadline := time.Now().Add(10 * healthShare)
	for {
		resp, body = rangeGet(t, http.MethodGet, base+"/healthz")
		if resp.StatusCode != 200 || time.Now().After(deadline) {
			break
		}
		time.Sleep(healthShare / 10)
	}
	var rep httpx.HealthReport
	if err := json.Unmarshal(body, &rep); err != nil || resp.StatusCode != 503 || rep.Checks["storage"].Status != "fail" {
		t.Fatalf("/healthz with a broken storage: %d %s", resp.StatusCode, body)
	}
	before := listings.Load()
	for range 20 {
		rangeGet(t, http.MethodGet, base+"/healthz")
	}
	// A burst may straddle one window's end, no more.
	if n := listings.Load() - before; n > 1 {
		t.Errorf("20 /healthz requests ran %d storage listings, want at most 1 (one per %v)", n, healthShare)
	}
	if strings.Contains(string(body), "secret-bucket") {
		t.Errorf("/healthz shows the storage error: %s", body)
	}
}

var listings atomic.Int64

// failingList is a storage driver whose listings fail as an object store's
// would, naming its bucket.
type failingList struct{ storagedriver.StorageDriver }

func (failingList) List(context.Context, string) ([]string, error) {
	listings.Add(1)
	return nil, errors.New("s3aws: ListObjectsV2 on bucket secret-bucket at https://s3.internal.example: AccessDenied")
}
