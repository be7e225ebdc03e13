package registry

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/registry/auth"
	_ "github.com/distribution/distribution/v3/registry/auth/token"
	"github.com/distribution/distribution/v3/registry/storage"
	"github.com/distribution/distribution/v3/registry/storage/driver/factory"
	"github.com/distribution/reference"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	goredis "github.com/redis/go-redis/v9"
	"golang.org/x/crypto/bcrypt"

	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// Shoal as Harbor's own registry, with the config.yml Harbor generates.
//
// The registry configs below are Harbor's templates rendered as Harbor
// renders them, with test paths and loopback ports:
//   - installer: make/photon/prepare/templates/registry/config.yml.jinja
//     (Harbor 2.x, v2.16) with metric.enabled;
//   - helm: harbor-helm templates/registry/registry-cm.yaml with
//     metrics.enabled, its REGISTRY_HTTP_SECRET and REGISTRY_REDIS_PASSWORD
//     environment, and the p2p block given through
//     registry.registry.extraEnvVars (REGISTRY_MIDDLEWARE_STORAGE_0_*), so
//     the chart's ConfigMap is used as it renders;
//   - token: the same installer template before Harbor 2.0 (commit
//     2064a1cd "Switch to basic authentication for registry"), whose
//     registry checks Harbor's tokens itself (auth.token, rootcertbundle)
//     and posts notifications to Harbor's core.
//
// In front of the registry is harborFront, a reverse proxy that forwards
// only what Harbor's nginx forwards to the registry's side — /v2/ and the
// token service — and, for Harbor 2, applies the rules of Harbor's core
// (src/server/middleware/v2auth): every /v2/ request is checked against the
// client's bearer token, GET/HEAD on a repository needs an Authorization
// header, paths outside the OCI routes are refused ("un-recognized
// request"), and what passes goes to the registry with core's own basic
// credentials (src/server/registry/proxy.go). The token service issues JWTs
// following distribution's token spec (x5c header, checked against the
// rootcertbundle; distribution's own token tests do the same) for three
// robot accounts: one that pushes, one that pulls, one without rights.
//
// Agents know only the front's URL (Harbor's external URL). One pulls a
// multi-layer image through it; a second pulls the same image and gets its
// bytes from the first; the robot without rights gets nothing.
func TestHarbor(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed; `make test` installs it")
	}
	for _, variant := range []string{"installer", "helm", "token"} {
		t.Run(variant, func(t *testing.T) { testHarbor(t, variant) })
	}
}

const (
	harborProject  = "library"
	harborIssuer   = "harbor-token-issuer"
	harborService  = "harbor-registry"
	harborRegUser  = "harbor_registry_user" // core's registry credential (htpasswd)
	robotPush      = "robot$library+push"
	robotPull      = "robot$library+pull"
	robotNone      = "robot$other+pull"
	harborMetricsP = "/metrics"
)

func testHarbor(t *testing.T, variant string) {
	dir := t.TempDir()
	bin := testenv.ShoalBinary(t)
	tokens := newHarborTokens(t, dir)

	// Harbor's redis, with a password as Harbor's external redis often has.
	redisAddr, redisPass := testenv.FreeAddr(t), secret.Generate()
	_, rport, _ := net.SplitHostPort(redisAddr)
	rp := testenv.Start(t, "redis-server", "redis-server", []string{"--port", rport, "--bind", "127.0.0.1", "--save", "",
		"--appendonly", "no", "--requirepass", redisPass})
	testenv.WaitTCP(t, rp, redisAddr, 10*time.Second)

	trackerSecret, clusterSecret, urlSecret := secret.Generate(), secret.Generate(), secret.Generate()
	trk := testenv.FreeAddr(t)
	trkCfg := writeTestFile(t, dir, "tracker.yml", fmt.Sprintf("addr: %s\nsecrets: [%s]\ncluster: {secret: %s}\ninterval: 2s\npeerTTL: 3m\nlog: {level: warn}\n", trk, trackerSecret, clusterSecret))
	tp := testenv.Start(t, "shoal tracker", bin, []string{"tracker", "--config", trkCfg})
	testenv.WaitHTTP(t, tp, "http://"+trk+"/healthz", 30*time.Second)

	// The front listens first: its URL is Harbor's external URL, which the
	// token variant's registry config names (the token realm).
	frontL, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	// By name: go-containerregistry refuses a token realm on a loopback or
	// private IP literal other than the registry's own host (SSRF guard),
	// and the realm is on the front, not on the agent's mirror.
	_, frontPort, _ := net.SplitHostPort(frontL.Addr().String())
	external := "http://localhost:" + frontPort
	regAddr, metricsAddr, seederAddr := testenv.FreeAddr(t), testenv.FreeAddr(t), testenv.FreeAddr(t)
	_, metricsPort, _ := net.SplitHostPort(metricsAddr)
	root := filepath.Join(dir, "storage")
	regPass := secret.Generate()
	hash, err := bcrypt.GenerateFromPassword([]byte(regPass), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := writeTestFile(t, dir, "passwd", harborRegUser+":"+string(hash)+"\n")

	// The one block an operator adds. Harbor 2's core passes only the OCI
	// routes, authorized: delivery inline. Harbor 1.x forwarded /v2/ as
	// is: the default redirect to /v2/_shoal/ passes.
	delivery := "inline"
	if variant == "token" {
		delivery = "redirect"
	}
	// helm and token run without the registry's seeder: the first node
	// then takes every byte through the front, over HTTP (helm: ranges of
	// the blob route; token: the piece URLs under /v2/_shoal/blobs/).
	seeder := fmt.Sprintf("{listen: %q}", seederAddr)
	if variant != "installer" {
		seeder = "{disabled: true}"
	}
	p2pOptions := fmt.Sprintf(`{delivery: %s, piecelength: 262144, secrets: [env:SHOAL_REGISTRY_SECRET], tracker: {url: "http://%s/announce", secrets: [env:SHOAL_TRACKER_SECRET]}, seeder: %s, cluster: {secret: env:SHOAL_CLUSTER_SECRET}}`,
		delivery, trk, seeder)
	env := []string{"SHOAL_REGISTRY_SECRET=" + urlSecret, "SHOAL_TRACKER_SECRET=" + trackerSecret, "SHOAL_CLUSTER_SECRET=" + clusterSecret,
		"OTEL_TRACES_EXPORTER=none"}

	var core, preheat *notificationSink
	var cfg string
	switch variant {
	case "installer":
		cfg = fmt.Sprintf(harborInstallerConfig, root, redisAddr, redisPass, regAddr, metricsPort, htpasswd) +
			"middleware:\n  storage:\n    - name: p2p\n      options: " + p2pOptions + "\n"
	case "helm":
		cfg = fmt.Sprintf(harborHelmConfig, root, redisAddr, regAddr, metricsPort, htpasswd)
		env = append(env, "REGISTRY_HTTP_SECRET="+secret.Generate(), "REGISTRY_REDIS_PASSWORD="+redisPass,
			"REGISTRY_MIDDLEWARE_STORAGE_0_NAME=p2p", "REGISTRY_MIDDLEWARE_STORAGE_0_OPTIONS="+p2pOptions)
	case "token":
		core, preheat = newNotificationSink(t), newNotificationSink(t)
		// Shoal's push hook, the second endpoint, as configs/registry.yml
		// has it.
		shoalEndpoint := "  - name: shoal-preheat\n    url: " + preheat.url + "\n    timeout: 2s\n    threshold: 5\n    backoff: 1s\n    ignore: {actions: [pull]}"
		cfg = fmt.Sprintf(harborTokenConfig, root, redisAddr, redisPass, regAddr, metricsPort, external, tokens.bundle, core.url, shoalEndpoint) +
			"middleware:\n  storage:\n    - name: p2p\n      options: " + p2pOptions + "\n"
	}
	cfgPath := writeTestFile(t, dir, "config.yml", cfg)
	reg := testenv.Start(t, "shoal registry ("+variant+")", bin, []string{"registry", cfgPath}, env...)
	testenv.WaitTCP(t, reg, regAddr, 60*time.Second)
	if !strings.Contains(reg.Output(), "redis.addr: "+redisAddr+" (distribution v2) read as redis.addrs") {
		t.Errorf("no log line mapping redis.addr:\n%s", reg.Output())
	}

	front := &frontLog{next: newHarborFront(t, "http://"+regAddr, tokens, external, variant != "token", harborRegUser, regPass)}
	srv := &http.Server{Handler: front, ReadHeaderTimeout: 10 * time.Second}
	go srv.Serve(frontL)
	t.Cleanup(func() { srv.Close() })

	// Push as the pushing robot, through the front.
	ref := strings.TrimPrefix(external, "http://") + "/" + harborProject + "/app:v1"
	img := testenv.PushRandomImage(t, ref, 1<<20, 3, remote.WithAuth(&authn.Basic{Username: robotPush, Password: tokens.password(robotPush)}))
	want := blobsOfImage(t, img)

	// Redis is Harbor's: distribution's layerinfo cache writes there.
	rc := goredis.NewClient(&goredis.Options{Addr: redisAddr, Password: redisPass, DB: 1})
	defer rc.Close()
	if n, err := rc.DBSize(context.Background()).Result(); err != nil || n == 0 {
		t.Errorf("redis db 1 after the push: %d keys, %v; want the layerinfo cache there", n, err)
	}

	// Two agents that know only Harbor's external URL.
	agents := make([]harborAgent, 2)
	for i := range agents {
		agents[i] = startHarborAgent(t, bin, dir, i, external, clusterSecret)
	}
	pull := func(a harborAgent, user string) error {
		r, err := name.ParseReference(a.mirror+"/"+harborProject+"/app:v1", name.Insecure)
		if err != nil {
			return err
		}
		got, err := remote.Image(r, remote.WithAuth(&authn.Basic{Username: user, Password: tokens.password(user)}))
		if err != nil {
			return err
		}
		return validate.Image(got)
	}
	if err := pull(agents[0], robotPull); err != nil {
		t.Fatalf("first agent pull as %s: %v", robotPull, err)
	}
	waitBytes(t, agents[0].mirror, want)
	// The first node's torrents came through the front: inline on its
	// authorized blob GETs (Harbor 2), or by redirect to /v2/_shoal/.
	first := scrapeMetrics(t, "http://"+agents[0].mirror+"/metrics")
	if n := first[`shoal_agent_fallbacks_total{reason="no_torrent"}`]; n != 0 {
		t.Errorf("first agent fell back to plain HTTP for %v blobs: no torrent through the front", n)
	}
	torrents := front.count(func(e frontEntry) bool {
		return e.status == http.StatusOK && e.contentType == "application/x-bittorrent"
	})
	if torrents < len(want)-1 { // the config blob may be too small to be worth a swarm
		t.Errorf("front served %d torrents, want one per layer at least (%d)", torrents, len(want)-1)
	}
	if variant == "token" {
		if n := front.count(func(e frontEntry) bool { return strings.HasPrefix(e.path, TorrentPath) && e.status == 200 }); n == 0 {
			t.Errorf("no torrent fetched through the front at %s", TorrentPath)
		}
		if n := front.count(func(e frontEntry) bool {
			return strings.HasPrefix(e.path, BlobPath) && e.status == http.StatusPartialContent
		}); n == 0 && first[bytesRegistryHTTP] > 0 {
			t.Errorf("registry bytes, but no piece range fetched through the front at %s", BlobPath)
		}
	}
	if variant == "helm" {
		// No seeder: every byte of the first node came from the registry
		// through the front.
		if first[bytesRegistryHTTP] < want.total() {
			t.Errorf("first agent: %v bytes from the registry, want %v", first[bytesRegistryHTTP], want.total())
		}
		if n := front.count(func(e frontEntry) bool {
			return e.status == http.StatusPartialContent && e.auth && strings.Contains(e.path, "/blobs/")
		}); n == 0 {
			t.Error("no authorized range GET of the blob route through the front")
		}
	}
	if err := pull(agents[1], robotPull); err != nil {
		t.Fatalf("second agent pull as %s: %v", robotPull, err)
	}
	m := waitBytes(t, agents[1].mirror, want)
	if m[bytesPeer] <= 0 {
		t.Errorf("second agent got no bytes from a peer (registry %v, peer %v)", m[bytesRegistryHTTP], m[bytesPeer])
	}
	if up := scrapeMetrics(t, "http://"+agents[0].mirror+"/metrics")["shoal_agent_uploaded_bytes_total"]; up <= 0 {
		t.Errorf("first agent uploaded nothing to the second")
	}
	t.Logf("%s: second agent bytes: registry %v, peer %v of %v", variant, m[bytesRegistryHTTP], m[bytesPeer], want.total())
	if m := scrapeMetrics(t, "http://"+agents[0].mirror+"/metrics"); m[`shoal_agent_blob_downloads_total`] < float64(len(want)) {
		t.Errorf("first agent downloads %v, want %d", m[`shoal_agent_blob_downloads_total`], len(want))
	}

	// The robot without pull rights gets nothing from a mirror that holds
	// every byte, and nothing over the peer wire (members only).
	if err := pull(agents[1], robotNone); err == nil {
		t.Errorf("%s pulled through the agent", robotNone)
	}
	noneTok := tokens.fetch(t, external, robotNone, "repository:"+harborProject+"/app:pull")
	for _, d := range want.digests() {
		for _, h := range []string{"", "Bearer " + noneTok} {
			req, _ := http.NewRequest(http.MethodGet, "http://"+agents[1].mirror+"/v2/"+harborProject+"/app/blobs/"+d, nil)
			if h != "" {
				req.Header.Set("Authorization", h)
			}
			resp, body := getBody(t, req)
			if resp.StatusCode == http.StatusOK || len(body) > 4096 {
				t.Errorf("blob %s with Authorization %.12q: %d, %d bytes", d, h, resp.StatusCode, len(body))
			}
		}
	}
	assertPeerWireRefuses(t, agents[0].p2p)

	// Harbor's Prometheus scrapes the registry at :<metric.port>; that port
	// serves metrics and nothing else.
	ms := getText(t, "http://"+metricsAddr+harborMetricsP)
	for _, want := range []string{"registry_http_requests_total", "shoal_registry_torrent_requests_total", "go_goroutines"} {
		if !strings.Contains(ms, want) {
			t.Errorf("debug port metrics lack %s", want)
		}
	}
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/heap", "/debug/vars", "/debug/health"} {
		resp, err := http.Get("http://" + metricsAddr + p)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("debug port %s: %d, want 404", p, resp.StatusCode)
		}
	}

	if variant == "token" {
		// Harbor's core and Shoal's own endpoint (preheat's webhook) both
		// hear of the push.
		for _, s := range []*notificationSink{core, preheat} {
			s.waitPush(t, harborProject+"/app", "v1")
		}
	}
	if variant == "installer" {
		// With the seeder on, each push is put into seeding.
		if regMetric := scrapeMetrics(t, "http://"+regAddr+"/metrics"); regMetric["shoal_registry_manifest_pushes_seeded_total"] < 1 {
			t.Errorf("the push was not put into seeding: %v", regMetric["shoal_registry_manifest_pushes_seeded_total"])
		}
	}

	// Harbor's garbage collection on this storage: upstream's
	// `registry garbage-collect` with Harbor's config, and the way Harbor
	// 2's GC job deletes a blob (registryctl: storage.Vacuum.RemoveBlob on
	// the bare driver built from the config's storage block). Either takes
	// Shoal's metainfo, kept beside the blob data, with the blob.
	if variant != "helm" {
		harborGC(t, variant, cfgPath, regAddr, regPass, reg, img, tokens, external)
	}
}

// harborGC deletes the image's manifest as Harbor's core does (on the
// registry, with its credential), stops the registry, collects garbage
// and checks that no blob of the image, nor its metainfo, is left.
func harborGC(t *testing.T, variant, cfgPath, regAddr, regPass string, reg *testenv.Process, img v1.Image, tokens *harborTokens, external string) {
	t.Helper()
	upstream := os.Getenv("REGISTRY_BIN")
	if upstream == "" {
		t.Log("REGISTRY_BIN not set: garbage collection not checked (run through make test)")
		return
	}
	dgst, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodDelete, "http://"+regAddr+"/v2/"+harborProject+"/app/manifests/"+dgst.String(), nil)
	if variant == "token" {
		req.Header.Set("Authorization", "Bearer "+tokens.fetch(t, external, robotPush, "repository:"+harborProject+"/app:delete"))
	} else {
		req.SetBasicAuth(harborRegUser, regPass)
	}
	if resp, body := getBody(t, req); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete manifest: %d %s", resp.StatusCode, body)
	}
	reg.Stop()
	cfg, err := LoadConfig(cfgPath)
	if err != nil {
		t.Fatal(err)
	}
	root := cfg.Storage.Parameters()["rootdirectory"].(string)
	layers := testenv.LayerDigests(t, img)
	blobDir := func(h v1.Hash) string {
		return filepath.Join(root, "docker/registry/v2/blobs", h.Algorithm, h.Hex[:2], h.Hex)
	}
	for _, h := range layers {
		if _, err := os.Stat(filepath.Join(blobDir(h), "torrent")); err != nil {
			t.Fatalf("no metainfo beside blob %s before GC: %v", h, err)
		}
	}
	// Harbor 2's GC job removes the first layer through registryctl.
	drv, err := factory.Create(context.Background(), cfg.Storage.Type(), cfg.Storage.Parameters())
	if err != nil {
		t.Fatal(err)
	}
	if err := storage.NewVacuum(context.Background(), drv).RemoveBlob(layers[0].String()); err != nil {
		t.Fatalf("vacuum: %v", err)
	}
	out, err := exec.Command(upstream, "garbage-collect", cfgPath).CombinedOutput()
	if err != nil {
		t.Fatalf("registry garbage-collect with Harbor's config: %v\n%s", err, out)
	}
	for _, h := range layers {
		if _, err := os.Stat(blobDir(h)); !os.IsNotExist(err) {
			t.Errorf("blob %s (and its metainfo) left after GC: %v", h, err)
		}
	}
}

// The registry configs, rendered from Harbor's templates (see TestHarbor).

// Harbor 2.16 installer, metric enabled, internal TLS off.
const harborInstallerConfig = `version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    layerinfo: redis
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
  delete:
    enabled: true
redis:
  addr: %s
  readtimeout: 10s
  writetimeout: 10s
  dialtimeout: 10s
  password: %s
  username: 
  db: 1
  enableTLS: false
  pool:
    maxidle: 100
    maxactive: 500
    idletimeout: 60s
http:
  addr: %s
  secret: placeholder
  debug:
    addr: :%s
    prometheus:
      enabled: true
      path: /metrics
auth:
  htpasswd:
    realm: harbor-registry-basic-realm
    path: %s
validation:
  disabled: true
compatibility:
  schema1:
    enabled: true
`

// harbor-helm's registry ConfigMap, filesystem storage, metrics enabled,
// internal TLS off; secret and redis password come from the environment.
const harborHelmConfig = `version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: %s
  cache:
    layerinfo: redis
  maintenance:
    uploadpurging:
      enabled: true
      age: 168h
      interval: 24h
      dryrun: false
  delete:
    enabled: true
  redirect:
    disable: false
redis:
  addr: %s
  db: 1
  username: ""
  password: ""
  readtimeout: 10s
  writetimeout: 10s
  dialtimeout: 10s
  enableTLS: false
  pool:
    maxidle: 100
    maxactive: 500
    idletimeout: 60s
http:
  addr: %s
  relativeurls: false
  # set via environment variable
  # secret: placeholder
  debug:
    addr: :%s
    prometheus:
      enabled: true
      path: /metrics
auth:
  htpasswd:
    realm: harbor-registry-basic-realm
    path: %s
validation:
  disabled: true
compatibility:
  schema1:
    enabled: true
`

// Harbor's installer template before 2.0: token auth and notifications to
// core (and a metrics port, as the 2.x template has).
const harborTokenConfig = `version: 0.1
log:
  level: info
  fields:
    service: registry
storage:
  cache:
    layerinfo: redis
  filesystem:
    rootdirectory: %s
  maintenance:
    uploadpurging:
      enabled: false
  delete:
    enabled: true
redis:
  addr: %s
  password: %s
  db: 1
http:
  addr: %s
  secret: placeholder
  debug:
    addr: :%s
    prometheus:
      enabled: true
      path: /metrics
auth:
  token:
    issuer: harbor-token-issuer
    realm: %s/service/token
    rootcertbundle: %s
    service: harbor-registry
validation:
  disabled: true
notifications:
  endpoints:
  - name: harbor
    disabled: false
    url: %s
    timeout: 3000ms
    threshold: 5
    backoff: 1s
    ignoredmediatypes:
        - application/vnd.docker.image.rootfs.diff.tar.gzip
        - application/vnd.docker.image.rootfs.foreign.diff.tar.gzip
        - application/vnd.oci.image.layer.v1.tar
        - application/octet-stream
%s
compatibility:
  schema1:
    enabled: true
`

func writeTestFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// harborTokens is Harbor's token service (/service/token): robot accounts
// with basic credentials get JWTs following distribution's token spec,
// signed by a key whose certificate is the registry's rootcertbundle and
// rides in the x5c header.
type harborTokens struct {
	key       *ecdsa.PrivateKey
	x5c       []string
	bundle    string
	passwords map[string]string
	rights    map[string]map[string][]string // robot → project → actions
}

func newHarborTokens(t *testing.T, dir string) *harborTokens {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "harbor-token-ca"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	return &harborTokens{
		key: key, x5c: []string{base64.StdEncoding.EncodeToString(der)},
		bundle:    writeTestFile(t, dir, "root.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}))),
		passwords: map[string]string{robotPush: secret.Generate(), robotPull: secret.Generate(), robotNone: secret.Generate()},
		rights: map[string]map[string][]string{
			robotPush: {harborProject: {"pull", "push", "delete"}},
			robotPull: {harborProject: {"pull"}},
			robotNone: {"other": {"pull"}},
		},
	}
}

func (h *harborTokens) password(robot string) string { return h.passwords[robot] }

type tokenAccess struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// ServeHTTP answers GET /service/token?service=…&scope=…: the granted
// access is what was asked for and the robot may do, as Harbor grants.
func (h *harborTokens) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	user, pass, ok := r.BasicAuth()
	if !ok || h.passwords[user] == "" || h.passwords[user] != pass {
		w.Header().Set("WWW-Authenticate", `Basic realm="harbor"`)
		http.Error(w, `{"errors":[{"code":"UNAUTHORIZED","message":"unauthorized"}]}`, http.StatusUnauthorized)
		return
	}
	var access []tokenAccess
	for _, scope := range r.URL.Query()["scope"] {
		for _, sc := range strings.Split(scope, " ") {
			parts := strings.Split(sc, ":")
			if len(parts) != 3 || parts[0] != "repository" {
				continue
			}
			project, _, _ := strings.Cut(parts[1], "/")
			granted := []string{}
			for _, a := range strings.Split(parts[2], ",") {
				for _, may := range h.rights[user][project] {
					if a == may {
						granted = append(granted, a)
					}
				}
			}
			access = append(access, tokenAccess{Type: "repository", Name: parts[1], Actions: granted})
		}
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: h.key},
		(&jose.SignerOptions{}).WithType("JWT").WithHeader("x5c", h.x5c))
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	now := time.Now()
	claims := map[string]any{
		"iss": harborIssuer, "sub": user, "aud": r.URL.Query().Get("service"),
		"exp": now.Add(30 * time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix(), "iat": now.Unix(),
		"jti": secret.Generate()[:16], "access": access,
	}
	tok, err := jwt.Signed(signer).Claims(claims).Serialize()
	if err != nil {
		http.Error(w, err.Error(), 500)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(map[string]any{"token": tok, "access_token": tok, "expires_in": 1800, "issued_at": now.UTC().Format(time.RFC3339)})
}

// fetch gets a token for scope as robot from the front's token service.
func (h *harborTokens) fetch(t *testing.T, external, robot, scope string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, external+"/service/token?service="+harborService+"&scope="+url.QueryEscape(scope), nil)
	req.SetBasicAuth(robot, h.password(robot))
	resp, body := getBody(t, req)
	var tr struct {
		Token string `json:"token"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &tr) != nil || tr.Token == "" {
		t.Fatalf("token for %s: %d %s", robot, resp.StatusCode, body)
	}
	return tr.Token
}

// Harbor's core's OCI routes (src/lib/patterns.go) by repository.
var (
	harborNameRe  = reference.NameRegexp.String()
	harborRepoRes = []*regexp.Regexp{
		regexp.MustCompile(`^/v2/(` + harborNameRe + `)/manifests/.*$`),
		regexp.MustCompile(`^/v2/(` + harborNameRe + `)/tags/list`),
		regexp.MustCompile(`^/v2/(` + harborNameRe + `)/blobs/[A-Za-z0-9_+.-]+:[A-Fa-f0-9]+$`),
		regexp.MustCompile(`^/v2/(` + harborNameRe + `)/blobs/uploads[/a-zA-Z0-9\-_\.=]*$`),
		regexp.MustCompile(`^/v2/(` + harborNameRe + `)/referrers/.*$`),
	}
)

// newHarborFront is Harbor's nginx (only /v2/ and /service/token reach
// the registry's side) and, with core2, Harbor 2's core in front of the
// registry (see TestHarbor).
func newHarborFront(t *testing.T, registry string, tokens *harborTokens, external string, core2 bool, regUser, regPass string) http.Handler {
	t.Helper()
	target, _ := url.Parse(registry)
	proxy := httputil.NewSingleHostReverseProxy(target)
	if core2 {
		director := proxy.Director
		proxy.Director = func(r *http.Request) {
			director(r)
			r.SetBasicAuth(regUser, regPass) // core's basicAuthDirector
		}
	}
	ac, err := auth.GetAccessController("token", map[string]any{
		"realm": external + "/service/token", "issuer": harborIssuer, "service": harborService, "rootcertbundle": tokens.bundle,
	})
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(w http.ResponseWriter, r *http.Request, err error) {
		if ch, ok := err.(auth.Challenge); ok {
			ch.SetHeaders(r, w)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusUnauthorized)
		fmt.Fprintf(w, `{"errors":[{"code":"UNAUTHORIZED","message":%q}]}`, err.Error())
	}
	core := func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			if _, err := ac.Authorized(r); err != nil {
				refuse(w, r, err)
				return
			}
			proxy.ServeHTTP(w, r)
			return
		}
		var repo string
		for _, re := range harborRepoRes {
			if m := re.FindStringSubmatch(r.URL.Path); m != nil {
				repo = m[1]
				break
			}
		}
		if repo == "" {
			refuse(w, r, fmt.Errorf("un-recognized request: %s %s", r.Method, r.URL.Path))
			return
		}
		action := map[string]string{http.MethodGet: "pull", http.MethodHead: "pull", http.MethodPost: "push",
			http.MethodPut: "push", http.MethodPatch: "push", http.MethodDelete: "delete"}[r.Method]
		if _, err := ac.Authorized(r, auth.Access{Resource: auth.Resource{Type: "repository", Name: repo}, Action: action}); err != nil {
			refuse(w, r, err)
			return
		}
		proxy.ServeHTTP(w, r)
	}
	mux := http.NewServeMux()
	mux.Handle("/service/token", tokens)
	mux.HandleFunc("/v2/", func(w http.ResponseWriter, r *http.Request) {
		if core2 {
			core(w, r)
			return
		}
		proxy.ServeHTTP(w, r)
	})
	return mux
}

// frontLog records what passed the front.
type frontLog struct {
	next    http.Handler
	mu      sync.Mutex
	entries []frontEntry
}

type frontEntry struct {
	path, contentType string
	status            int
	auth              bool
}

type frontRecorder struct {
	http.ResponseWriter
	status int
}

func (r *frontRecorder) WriteHeader(code int) {
	if r.status == 0 {
		r.status = code
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *frontRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

func (f *frontLog) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	rec := &frontRecorder{ResponseWriter: w}
	auth := r.Header.Get("Authorization") != ""
	f.next.ServeHTTP(rec, r)
	f.mu.Lock()
	f.entries = append(f.entries, frontEntry{path: r.URL.Path, contentType: w.Header().Get("Content-Type"), status: rec.status, auth: auth})
	f.mu.Unlock()
}

func (f *frontLog) count(match func(frontEntry) bool) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, e := range f.entries {
		if match(e) {
			n++
		}
	}
	return n
}

// notificationSink receives distribution's notifications (as Harbor
// core's /service/notifications and Shoal's preheat webhook do).
type notificationSink struct {
	url    string
	mu     sync.Mutex
	events []notificationEvent
}

type notificationEvent struct {
	Action string `json:"action"`
	Target struct {
		MediaType  string `json:"mediaType"`
		Repository string `json:"repository"`
		Tag        string `json:"tag"`
	} `json:"target"`
}

func newNotificationSink(t *testing.T) *notificationSink {
	s := &notificationSink{}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 10 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var env struct {
			Events []notificationEvent `json:"events"`
		}
		if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&env); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		s.mu.Lock()
		s.events = append(s.events, env.Events...)
		s.mu.Unlock()
	})}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	s.url = "http://" + l.Addr().String() + "/service/notifications"
	return s
}

func (s *notificationSink) waitPush(t *testing.T, repo, tag string) {
	t.Helper()
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		s.mu.Lock()
		for _, e := range s.events {
			if e.Action == "push" && e.Target.Repository == repo && e.Target.Tag == tag && strings.Contains(e.Target.MediaType, "manifest") {
				s.mu.Unlock()
				return
			}
		}
		s.mu.Unlock()
	}
	t.Errorf("%s: no push event for %s:%s", s.url, repo, tag)
}

type harborAgent struct{ mirror, p2p string }

func startHarborAgent(t *testing.T, bin, dir string, i int, external, clusterSecret string) harborAgent {
	t.Helper()
	a := harborAgent{mirror: testenv.FreeAddr(t), p2p: testenv.FreeAddr(t)}
	host := strings.TrimPrefix(external, "http://")
	cfg := writeTestFile(t, dir, fmt.Sprintf("agent-%d.yml", i), fmt.Sprintf(`node: {id: harbor-node-%[1]d}
cluster: {secret: %[2]q}
mirror: {addr: %[3]q}
control: {addr: %[4]q}
upstreams:
  - {host: %[5]q, url: %[6]q, default: true}
cache: {dir: %[7]q, maxBytes: 1073741824}
p2p: {enabled: true, addr: %[8]q, stallTimeout: 5s}
log: {level: info}
`, i, clusterSecret, a.mirror, testenv.FreeAddr(t), host, external, filepath.Join(dir, fmt.Sprintf("cache-%d", i)), a.p2p))
	p := testenv.Start(t, fmt.Sprintf("shoal agent %d", i), bin, []string{"agent", "--config", cfg})
	testenv.WaitHTTP(t, p, "http://"+a.mirror+"/healthz", 30*time.Second)
	return a
}

// assertPeerWireRefuses dials a node's peer wire as an outsider (no
// cluster certificate): the handshake must not let it read anything.
func assertPeerWireRefuses(t *testing.T, addr string) {
	t.Helper()
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr, &tls.Config{InsecureSkipVerify: true})
	if err != nil {
		return // refused at the handshake
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("\x13BitTorrent protocol")); err == nil {
		if n, err := c.Read(make([]byte, 64)); err == nil || n > 0 {
			t.Errorf("peer wire at %s answered an outsider without a cluster certificate (%d bytes)", addr, n)
		}
	}
}

// harborBlobs is what a pull moves: digest → size.
type harborBlobs map[string]int64

func blobsOfImage(t *testing.T, img v1.Image) harborBlobs {
	t.Helper()
	b := harborBlobs{}
	for d, n := range testenv.Blobs(t, img) {
		b[d.String()] = n
	}
	return b
}

func (b harborBlobs) total() float64 {
	var n int64
	for _, v := range b {
		n += v
	}
	return float64(n)
}

func (b harborBlobs) digests() []string {
	var out []string
	for d := range b {
		out = append(out, d)
	}
	return out
}

const (
	bytesPeer         = `shoal_agent_blob_bytes_total{source="peer"}`
	bytesRegistryHTTP = `shoal_agent_blob_bytes_total{source="registry"}`
)

// waitBytes waits until an agent counted every blob byte as downloaded
// (the client may see the last byte a moment before the agent counts it).
func waitBytes(t *testing.T, mirror string, want harborBlobs) map[string]float64 {
	t.Helper()
	var m map[string]float64
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		m = scrapeMetrics(t, "http://"+mirror+"/metrics")
		if m[bytesPeer]+m[bytesRegistryHTTP] >= want.total() {
			return m
		}
	}
	t.Errorf("agent %s: %v bytes from registry and %v from peers, want %v in all", mirror, m[bytesRegistryHTTP], m[bytesPeer], want.total())
	return m
}

func scrapeMetrics(t *testing.T, u string) map[string]float64 {
	t.Helper()
	m := map[string]float64{}
	for _, line := range strings.Split(getText(t, u), "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[i+1:], &v); err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

func getText(t *testing.T, u string) string {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("GET %s: %d %.300s", u, resp.StatusCode, b)
	}
	return string(b)
}

// Harbor's Sentinel form of the redis block (installer template: Sentinels
// comma-separated in addr, the master's name in sentinelMasterSet) against
// a real Sentinel: the registry starts, logs the mapping and its layerinfo
// cache lands on the master Sentinel names.
func TestHarborRedisSentinel(t *testing.T) {
	if _, err := exec.LookPath("redis-server"); err != nil {
		t.Skip("redis-server not installed; `make test` installs it")
	}
	dir := t.TempDir()
	master, pass := testenv.FreeAddr(t), secret.Generate()
	mhost, mport, _ := net.SplitHostPort(master)
	mp := testenv.Start(t, "redis master", "redis-server", []string{"--port", mport, "--bind", mhost, "--save", "", "--appendonly", "no", "--requirepass", pass})
	testenv.WaitTCP(t, mp, master, 10*time.Second)
	sentinel := testenv.FreeAddr(t)
	_, sport, _ := net.SplitHostPort(sentinel)
	sconf := writeTestFile(t, dir, "sentinel.conf", fmt.Sprintf("port %s\nbind 127.0.0.1\nsentinel monitor mymaster %s %s 1\nsentinel auth-pass mymaster %s\n", sport, mhost, mport, pass))
	sp := testenv.Start(t, "redis sentinel", "redis-server", []string{sconf, "--sentinel"})
	testenv.WaitTCP(t, sp, sentinel, 10*time.Second)

	regAddr, metricsAddr := testenv.FreeAddr(t), testenv.FreeAddr(t)
	_, metricsPort, _ := net.SplitHostPort(metricsAddr)
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	htpasswd := writeTestFile(t, dir, "passwd", harborRegUser+":"+string(hash)+"\n")
	cfg := fmt.Sprintf(harborInstallerConfig, filepath.Join(dir, "storage"), "SENTINELS", pass, regAddr, metricsPort, htpasswd)
	// A second, unreachable Sentinel: Harbor lists them all.
	cfg = strings.Replace(cfg, "  addr: SENTINELS\n", "  # sentinel hosts with comma\n  addr: "+sentinel+","+testenv.FreeAddr(t)+"\n  sentinelMasterSet: mymaster\n", 1)
	cfgPath := writeTestFile(t, dir, "config.yml", cfg+"middleware:\n  storage:\n    - name: p2p\n      options: {seeder: {disabled: true}, secrets: [env:SHOAL_REGISTRY_SECRET]}\n")
	reg := testenv.Start(t, "shoal registry", testenv.ShoalBinary(t), []string{"registry", cfgPath}, "SHOAL_REGISTRY_SECRET="+secret.Generate())
	testenv.WaitTCP(t, reg, regAddr, 60*time.Second)
	for _, want := range []string{"read as redis.addrs: [" + sentinel, "redis.sentinelMasterSet: mymaster (Harbor's v2 registry) read as redis.mastername: mymaster"} {
		if !strings.Contains(reg.Output(), want) {
			t.Errorf("registry log lacks %q", want)
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+regAddr+"/v2/library/s/blobs/uploads/", nil)
	req.SetBasicAuth(harborRegUser, "pw")
	data := []byte("layer through a sentinel-managed cache")
	uploadAs(t, "http://"+regAddr, "library/s", data, req.Header)
	rc := goredis.NewClient(&goredis.Options{Addr: master, Password: pass, DB: 1})
	defer rc.Close()
	if n, err := rc.DBSize(context.Background()).Result(); err != nil || n == 0 {
		t.Errorf("master db 1: %d keys, %v; want the layerinfo cache there", n, err)
	}
}
