package grafana

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	sdkprom "github.com/grafana/grafana-foundation-sdk/go/prometheus"

	"github.com/shoalproject/shoal/internal/testenv"
)

// The committed files are what the generator writes today, and each decodes
// strictly into the SDK's schema types and passes the schema's validation:
// an edit by hand that Grafana would reject, or a stale copy in the chart,
// fails here.
func TestDashboardFilesMatchSchema(t *testing.T) {
	want, err := JSON()
	if err != nil {
		t.Fatal(err)
	}
	plugins.RegisterDefaultPlugins()
	for _, p := range Files {
		got, err := os.ReadFile(p)
		if err != nil {
			t.Fatalf("%v (run `make dashboard`)", err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s is not what the generator writes: run `make dashboard`", p)
		}
		var d dashboard.Dashboard
		if err := strictDecode(&d, got); err != nil {
			t.Fatalf("%s does not decode strictly into the dashboard schema: %v", p, err)
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("%s fails the dashboard schema's validation: %v", p, err)
		}
	}
	// The strict decoder does refuse what the schema does not know.
	bad := bytes.Replace(want, []byte(`"type": "timeseries",`), []byte(`"type": "timeseries", "legendd": {},`), 1)
	if err := strictDecode(&dashboard.Dashboard{}, bad); err == nil {
		t.Fatal("a panel with an unknown field decoded strictly")
	}
	d, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	ids := map[uint32]bool{}
	for _, p := range d.Panels {
		if p.RowPanel != nil {
			continue
		}
		if p.Panel.Id == nil || ids[*p.Panel.Id] {
			t.Errorf("panel %q: missing or duplicate id", title(p.Panel))
		} else {
			ids[*p.Panel.Id] = true
		}
		if len(p.Panel.Targets) == 0 {
			t.Errorf("panel %q has no query", title(p.Panel))
		}
	}
	if len(exprs(t, d)) < 20 {
		t.Fatalf("only %d queries found: the walk over panels is broken", len(exprs(t, d)))
	}
}

// strictDecode is the SDK's strict decoding, minus its habit of returning
// an empty cog.BuildErrors as a non-nil error.
func strictDecode(d *dashboard.Dashboard, raw []byte) error {
	err := d.UnmarshalJSONStrict(raw)
	var be cog.BuildErrors
	if errors.As(err, &be) && len(be) == 0 {
		return nil
	}
	return err
}

func title(p *dashboard.Panel) string {
	if p.Title == nil {
		return "<untitled>"
	}
	return *p.Title
}

// panelQuery is one expression of the dashboard and where it is.
type panelQuery struct {
	panel, ref, expr string
}

func exprs(t *testing.T, d dashboard.Dashboard) []panelQuery {
	t.Helper()
	var out []panelQuery
	add := func(p *dashboard.Panel) {
		for _, tg := range p.Targets {
			var pq sdkprom.Dataquery
			switch v := tg.(type) {
			case sdkprom.Dataquery:
				pq = v
			case *sdkprom.Dataquery:
				pq = *v
			default:
				t.Fatalf("panel %q: target %T is not a Prometheus query", title(p), tg)
			}
			ref := ""
			if pq.RefId != nil {
				ref = *pq.RefId
			}
			out = append(out, panelQuery{title(p), ref, pq.Expr})
		}
	}
	for _, p := range d.Panels {
		switch {
		case p.Panel != nil:
			add(p.Panel)
		case p.RowPanel != nil:
			for i := range p.RowPanel.Panels {
				add(&p.RowPanel.Panels[i])
			}
		}
	}
	return out
}

// The interval Grafana would pick for $__rate_interval here: four scrape
// intervals, so a rate always spans several samples.
const (
	scrapeInterval = "1s"
	rateInterval   = "10s"
	rangeWindow    = "10m"
)

// grafanaVars expands what Grafana substitutes before a query reaches
// Prometheus: its built-in intervals and the job variable at "All".
func grafanaVars(expr string) string {
	r := strings.NewReplacer(
		"$__rate_interval", rateInterval,
		"$__range", rangeWindow,
		"${job}", JobAll,
		"$job", JobAll,
	)
	return r.Replace(expr)
}

var leftover = regexp.MustCompile(`\$\{?[A-Za-z_]`)

// Every query of the dashboard, run through a real Prometheus's HTTP API
// against a real Shoal (registry with the p2p middleware, tracker, preheat,
// two agents, and a plain upstream registry) after pulls between the two
// nodes, a pull from a registry without torrents (a fallback), a preheat
// job and refused announces: a query that errors or returns no series
// (a misspelt metric or label, a wrong function) fails the test.
func TestDashboardQueriesOnPrometheus(t *testing.T) {
	if testing.Short() {
		t.Skip("starts Shoal and Prometheus")
	}
	shoal := binary(t, "SHOAL_BIN", "../../bin/shoal", "make build")
	promBin := binary(t, "PROMETHEUS_BIN", "../../bin/prometheus", "make prometheus")
	plainBin := binary(t, "REGISTRY_BIN", "../../bin/registry", "make tools")
	d, err := Build()
	if err != nil {
		t.Fatal(err)
	}
	queries := exprs(t, d)

	s := startShoal(t, shoal, plainBin)
	prom := startPrometheus(t, promBin, s.targets, s.metricsToken)

	// Node A pulls cold (from the registry), node B next (from A); B then
	// pulls the same image again (cache hits).
	img := testenv.PushRandomImage(t, s.registry+"/lib/dash:v1", 1<<20, 3)
	pull(t, s.agents[0].mirror, "lib/dash:v1", "", img)
	pull(t, s.agents[1].mirror, "lib/dash:v1", "", img)
	pull(t, s.agents[1].mirror, "lib/dash:v1", "", img)
	// A registry that serves no torrents: the agent falls back to HTTP
	// (fallbacks{reason="no_torrent"}).
	plainImg := testenv.PushRandomImage(t, s.plain+"/lib/plain:v1", 256<<10, 2)
	pull(t, s.agents[0].mirror, "lib/plain:v1", s.plain, plainImg)
	// A preheat job to both nodes.
	testenv.PushRandomImage(t, s.registry+"/lib/pre:v1", 512<<10, 2)
	s.preheat(t, s.registry+"/lib/pre:v1")
	// Announces the tracker refuses: malformed, and with a forged token;
	// and a torrent URL the registry refuses (no valid signature).
	refusedAnnounces(t, s.tracker)
	resp, err := http.Get("http://" + s.registry + "/_shoal/torrents/forged")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode < 400 {
		t.Fatalf("forged torrent URL answered %s", resp.Status)
	}

	// Prometheus scrapes every second; a counter born after the first
	// scrape needs two samples in the window. Give it a few seconds, then
	// report every query that still fails.
	var failures []string
	deadline := time.Now().Add(30 * time.Second)
	for {
		failures = failures[:0]
		for _, pq := range queries {
			e := grafanaVars(pq.expr)
			if leftover.MatchString(e) {
				failures = append(failures, fmt.Sprintf("%s/%s: unexpanded variable in %s", pq.panel, pq.ref, e))
				continue
			}
			n, err := prom.query(e)
			switch {
			case err != nil:
				failures = append(failures, fmt.Sprintf("%s/%s: %s: %v", pq.panel, pq.ref, e, err))
			case n == 0:
				failures = append(failures, fmt.Sprintf("%s/%s: %s: no series", pq.panel, pq.ref, e))
			}
		}
		if len(failures) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Second)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d dashboard queries failed on Prometheus:\n%s", len(failures), len(queries), strings.Join(failures, "\n"))
	}
	t.Logf("%d dashboard queries answered with series", len(queries))

	// The numbers behind the first panel make sense too: bytes came from
	// the registry and from the other node.
	for _, src := range []string{"registry", "peer"} {
		v := prom.value(t, fmt.Sprintf(`sum(shoal_agent_blob_bytes_total{source=%q})`, src))
		if v <= 0 {
			t.Errorf("shoal_agent_blob_bytes_total{source=%q} = %v, want > 0", src, v)
		}
	}
}

func binary(t *testing.T, env, def, how string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		p, _ = filepath.Abs(def)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s not found at %s: run `%s` (make test builds it)", env, p, how)
	}
	return p
}

func secretHex() string {
	var b [32]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type agentAddrs struct{ mirror, control, p2p, metrics string }

type shoalCluster struct {
	registry, plain, tracker, preheatURL string
	preheatToken                         string
	metricsToken                         string
	agents                               []agentAddrs
	// targets are Prometheus scrape jobs: job name → addresses.
	targets map[string][]string
}

func startShoal(t *testing.T, shoal, plainBin string) *shoalCluster {
	t.Helper()
	c := &shoalCluster{
		registry: testenv.FreeAddr(t), plain: testenv.FreeAddr(t), tracker: testenv.FreeAddr(t),
		preheatToken: secretHex(), metricsToken: secretHex(),
	}
	trackerSecret, clusterSecret := secretHex(), secretHex()

	plainCfg := writeFile(t, "plain.yml", fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http: {addr: %q}
storage: {filesystem: {rootdirectory: %q}}
`, c.plain, t.TempDir()))
	plain := testenv.Start(t, "plain registry", plainBin, []string{"serve", plainCfg})
	testenv.WaitHTTP(t, plain, "http://"+c.plain+"/v2/", 30*time.Second)

	trk := testenv.Start(t, "shoal tracker", shoal, []string{"tracker", "--config", writeFile(t, "tracker.yml", fmt.Sprintf(`addr: %q
secrets: [%s]
cluster: {secret: %s}
interval: 10s
log: {level: warn}
`, c.tracker, trackerSecret, clusterSecret))})
	testenv.WaitHTTP(t, trk, "http://"+c.tracker+"/healthz", 30*time.Second)

	reg := testenv.Start(t, "shoal registry", shoal, []string{"registry", "--config", writeFile(t, "registry.yml", fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http: {addr: %[1]q, secret: %[2]s}
storage:
  filesystem: {rootdirectory: %[3]q}
middleware:
  storage:
    - name: p2p
      options:
        piecelength: 262144
        baseurl: "http://%[1]s"
        tracker:
          url: "http://%[4]s/announce"
          secrets: [%[5]s]
        seeder:
          listen: %[6]q
        cluster: {secret: %[7]s}
`, c.registry, secretHex(), t.TempDir(), c.tracker, trackerSecret, testenv.FreeAddr(t), clusterSecret))})
	testenv.WaitHTTP(t, reg, "http://"+c.registry+"/v2/", 60*time.Second)

	preheatAddr := testenv.FreeAddr(t)
	c.preheatURL = "http://" + preheatAddr
	ph := testenv.Start(t, "shoal preheat", shoal, []string{"preheat", "serve", "--config", writeFile(t, "preheat.yml", fmt.Sprintf(`addr: %q
cluster: {secret: %s}
registry: "http://%s"
plainHTTPRegistries: [%q]
apiTokens: [%s]
heartbeatTTL: 30s
fetchTimeout: 1m
log: {level: warn}
`, preheatAddr, clusterSecret, c.registry, c.registry, c.preheatToken))})
	testenv.WaitHTTP(t, ph, c.preheatURL+"/healthz", 30*time.Second)

	for i := range 2 {
		a := agentAddrs{mirror: testenv.FreeAddr(t), control: testenv.FreeAddr(t), p2p: testenv.FreeAddr(t), metrics: testenv.FreeAddr(t)}
		cfg := writeFile(t, "agent.yml", fmt.Sprintf(`node: {id: node-%[1]d, groups: [dash]}
cluster: {secret: %[2]s}
mirror: {addr: %[3]q}
control: {addr: %[4]q, advertise: "https://%[4]s"}
metrics: {addr: %[5]q, token: %[6]s}
upstreams:
  - {host: %[7]q, url: "http://%[7]s", default: true}
  - {host: %[8]q, url: "http://%[8]s"}
cache: {dir: %[9]q, maxBytes: 1073741824}
p2p: {enabled: true, addr: %[10]q, advertiseIP: 127.0.0.1, stallTimeout: 5s}
preheat: {url: %[11]q, interval: 1s}
log: {level: warn}
`, i, clusterSecret, a.mirror, a.control, a.metrics, c.metricsToken, c.registry, c.plain,
			filepath.Join(t.TempDir(), "cache"), a.p2p, c.preheatURL))
		p := testenv.Start(t, fmt.Sprintf("shoal agent node-%d", i), shoal, []string{"agent", "--config", cfg})
		testenv.WaitHTTP(t, p, "http://"+a.mirror+"/healthz", 30*time.Second)
		c.agents = append(c.agents, a)
	}
	// The job names the chart's ServiceMonitors give a release "shoal".
	c.targets = map[string][]string{
		"shoal-registry":      {c.registry},
		"shoal-tracker":       {c.tracker},
		"shoal-preheat":       {preheatAddr},
		"shoal-agent-metrics": {c.agents[0].metrics, c.agents[1].metrics},
	}
	return c
}

// preheat runs a job for image to both nodes through the API with its
// bearer token and waits for SUCCESS.
func (c *shoalCluster) preheat(t *testing.T, image string) {
	t.Helper()
	// Both agents must have enrolled by heartbeat first.
	testenv.WaitFor(t, nil, "both agents to enroll with preheat", 30*time.Second, func() error {
		var ns struct {
			Nodes []struct {
				ID    string `json:"id"`
				Alive bool   `json:"alive"`
			} `json:"nodes"`
		}
		if err := c.api("GET", "/api/v1/nodes", nil, &ns); err != nil {
			return err
		}
		alive := 0
		for _, n := range ns.Nodes {
			if n.Alive {
				alive++
			}
		}
		if alive < 2 {
			return fmt.Errorf("%d of 2 nodes alive", alive)
		}
		return nil
	})
	var job struct {
		ID    int64  `json:"id"`
		State string `json:"state"`
	}
	if err := c.api("POST", "/api/v1/jobs", map[string]any{"image": image}, &job); err != nil {
		t.Fatal(err)
	}
	testenv.WaitFor(t, nil, "the preheat job to succeed", 60*time.Second, func() error {
		if err := c.api("GET", fmt.Sprintf("/api/v1/jobs/%d", job.ID), nil, &job); err != nil {
			return err
		}
		if job.State != "SUCCESS" {
			return fmt.Errorf("job %d is %s", job.ID, job.State)
		}
		return nil
	})
}

func (c *shoalCluster) api(method, path string, body, out any) error {
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return err
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, c.preheatURL+path, r)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+c.preheatToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return json.Unmarshal(b, out)
}

// pull reads repo:v1's manifest and every blob through an agent's mirror
// (ns picks a non-default upstream) and checks each blob's digest.
func pull(t *testing.T, mirror, ref, ns string, want v1.Image) {
	t.Helper()
	m, err := want.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	repo, tag, _ := strings.Cut(ref, ":")
	q := ""
	if ns != "" {
		q = "?ns=" + url.QueryEscape(ns)
	}
	get := func(path, accept string) []byte {
		req, _ := http.NewRequest("GET", "http://"+mirror+"/v2/"+repo+path+q, nil)
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil || resp.StatusCode != 200 {
			t.Fatalf("GET %s through %s: %v %s", path, mirror, err, resp.Status)
		}
		return b
	}
	get("/manifests/"+tag, string(m.MediaType))
	for _, desc := range append([]v1.Descriptor{m.Config}, m.Layers...) {
		b := get("/blobs/"+desc.Digest.String(), "")
		h, _, err := v1.SHA256(bytes.NewReader(b))
		if err != nil || h != desc.Digest {
			t.Fatalf("blob %s through %s: got %s", desc.Digest, mirror, h)
		}
	}
}

// refusedAnnounces sends the tracker one announce it cannot parse and one
// with a forged token.
func refusedAnnounces(t *testing.T, tracker string) {
	t.Helper()
	ih := strings.Repeat("%01", 20)
	for _, q := range []string{
		"info_hash=short",
		"info_hash=" + ih + "&peer_id=" + strings.Repeat("%02", 20) + "&port=6881&left=0&token=forged",
	} {
		resp, err := http.Get("http://" + tracker + "/announce?" + q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if !bytes.Contains(b, []byte("failure reason")) {
			t.Fatalf("announce %s was not refused: %s", q, b)
		}
	}
}

type prometheusServer struct{ url string }

// startPrometheus scrapes targets every second; jobs of agents send the
// agents' metrics bearer token, as the chart's ServiceMonitor does.
func startPrometheus(t *testing.T, bin string, targets map[string][]string, agentToken string) *prometheusServer {
	t.Helper()
	var jobs []string
	for j := range targets {
		jobs = append(jobs, j)
	}
	sort.Strings(jobs)
	var cfg strings.Builder
	fmt.Fprintf(&cfg, "global: {scrape_interval: %s, scrape_timeout: %s}\nscrape_configs:\n", scrapeInterval, scrapeInterval)
	tokenFile := filepath.Join(t.TempDir(), "agent-metrics-token")
	if err := os.WriteFile(tokenFile, []byte(agentToken), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, j := range jobs {
		fmt.Fprintf(&cfg, "  - job_name: %s\n", j)
		if strings.Contains(j, "agent") {
			fmt.Fprintf(&cfg, "    authorization: {credentials_file: %q}\n", tokenFile)
		}
		fmt.Fprintf(&cfg, "    static_configs: [{targets: [%s]}]\n", quoteAll(targets[j]))
	}
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	p := &prometheusServer{url: "http://" + addr}
	proc := testenv.Start(t, "prometheus", bin, []string{
		"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + addr, "--log.level=warn",
	})
	testenv.WaitHTTP(t, proc, p.url+"/-/ready", 60*time.Second)
	return p
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// query runs an instant query and returns how many series it answered.
func (p *prometheusServer) query(expr string) (int, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", p.url+"/api/v1/query?query="+url.QueryEscape(expr), nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var r struct {
		Status    string `json:"status"`
		Error     string `json:"error"`
		ErrorType string `json:"errorType"`
		Data      struct {
			ResultType string            `json:"resultType"`
			Result     []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return 0, fmt.Errorf("decoding the answer (%s): %w", resp.Status, err)
	}
	if r.Status != "success" {
		return 0, fmt.Errorf("%s: %s", r.ErrorType, r.Error)
	}
	if r.Data.ResultType != "vector" {
		return 0, fmt.Errorf("result type %s, want vector", r.Data.ResultType)
	}
	return len(r.Data.Result), nil
}

// value is the single sample of a scalar-like instant query.
func (p *prometheusServer) value(t *testing.T, expr string) float64 {
	t.Helper()
	resp, err := http.Get(p.url + "/api/v1/query?query=" + url.QueryEscape(expr))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var r struct {
		Data struct {
			Result []struct {
				Value [2]any `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil || len(r.Data.Result) != 1 {
		t.Fatalf("%s: %v (%d series)", expr, err, len(r.Data.Result))
	}
	var v float64
	s, _ := r.Data.Result[0].Value[1].(string)
	fmt.Sscan(s, &v)
	return v
}
