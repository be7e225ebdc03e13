package browsertest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/preheat"
)

// TestConsoleBrowser drives the console in headless Chromium against a
// real `shoal run`: log in, see the node, preheat a pushed image and watch
// it reach SUCCESS without reloading, start and cancel a second job, have
// a bad image reference rejected in the form, and see the swarms the
// tracker holds. Screenshots go to
// $SHOAL_CONSOLE_RESULTS (make test: bin/console-results).
//
// `shoal run` listens on fixed ports, so the test re-runs itself in a
// network namespace of its own: other tests and other `shoal run`s on the
// machine cannot collide with it, and nothing leaves loopback.
func TestConsoleBrowser(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not installed (scripts/install-test-deps.sh installs it; `make test` runs that)")
	}
	if os.Getenv("SHOAL_CONSOLE_NETNS") == "" {
		runInNetns(t)
		return
	}
	consoleBrowser(t, chromium)
}

func runInNetns(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root for a network namespace (shoal run's fixed ports must not collide)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip netns)")
	}
	ns := fmt.Sprintf("shoal-console-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		t.Skipf("ip netns add: %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("ip", "netns", "del", ns).Run() })
	if out, err := exec.Command("ip", "-n", ns, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		t.Fatalf("lo up: %v: %s", err, out)
	}
	bin := testenv.ShoalBinary(t) // built here: the namespace has no module proxy
	cmd := exec.Command("ip", "netns", "exec", ns, os.Args[0], "-test.run", "^TestConsoleBrowser$", "-test.v", "-test.count=1", "-test.timeout=5m")
	cmd.Env = append(os.Environ(), "SHOAL_CONSOLE_NETNS="+ns, "SHOAL_BIN="+bin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	t.Logf("in namespace %s:\n%s", ns, out.String())
	if err != nil {
		t.Fatalf("browser test in namespace %s: %v", ns, err)
	}
	if !strings.Contains(out.String(), "--- PASS: TestConsoleBrowser") {
		t.Fatal("browser test in the namespace did not pass")
	}
}

func consoleBrowser(t *testing.T, chromium string) {
	results := os.Getenv("SHOAL_CONSOLE_RESULTS")
	if results == "" {
		results = filepath.Join(os.TempDir(), "shoal-console-results")
	}
	if err := os.MkdirAll(results, 0o755); err != nil {
		t.Fatal(err)
	}
	var tb [32]byte
	_, _ = rand.Read(tb[:])
	token := hex.EncodeToString(tb[:])
	run := testenv.Start(t, "shoal run", testenv.ShoalBinary(t),
		[]string{"run", "--data", t.TempDir(), "--preheat-token", "env:SHOAL_TEST_PREHEAT_TOKEN", "--cluster-secret", "env:SHOAL_TEST_CLUSTER_SECRET"},
		"SHOAL_TEST_PREHEAT_TOKEN="+token, "SHOAL_TEST_CLUSTER_SECRET="+testClusterSecret)
	const api = "http://127.0.0.1:8002"
	testenv.WaitHTTP(t, run, api+"/healthz", 60*time.Second)
	testenv.WaitHTTP(t, run, "http://127.0.0.1:5000/v2/", 30*time.Second)
	if strings.Contains(run.Output(), token) {
		t.Fatal("shoal run printed the token")
	}
	testenv.PushRandomImage(t, "127.0.0.1:5000/library/console-demo:v1", 512<<10, 3)

	// The agent of `shoal run` registers by heartbeat.
	var node string
	deadline := time.Now().Add(30 * time.Second)
	for node == "" && time.Now().Before(deadline) {
		var ns struct{ Nodes []preheat.NodeView }
		call(t, "GET", api+"/api/v1/nodes", map[string]string{"Authorization": "Bearer " + token}, nil, &ns)
		for _, n := range ns.Nodes {
			if n.Alive {
				node = n.ID
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if node == "" {
		t.Fatal("shoal run's agent never sent a heartbeat")
	}

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(chromium), chromedp.NoSandbox,
		chromedp.Flag("disable-dev-shm-usage", true), chromedp.WindowSize(1280, 900))
	actx, cancelA := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelA()
	ctx, cancelB := chromedp.NewContext(actx)
	defer cancelB()
	ctx, cancelT := context.WithTimeout(ctx, 3*time.Minute)
	defer cancelT()
	shot := func(name string) chromedp.Action {
		return chromedp.ActionFunc(func(ctx context.Context) error {
			var png []byte
			// Quality 100 makes a PNG; below that chromedp asks for JPEG.
			if err := chromedp.FullScreenshot(&png, 100).Do(ctx); err != nil {
				return err
			}
			return os.WriteFile(filepath.Join(results, name), png, 0o644)
		})
	}
	must := func(step string, actions ...chromedp.Action) {
		t.Helper()
		if err := chromedp.Run(ctx, actions...); err != nil {
			var body string
			_ = chromedp.Run(ctx, chromedp.Text("main", &body, chromedp.ByQuery))
			_ = chromedp.Run(ctx, shot("failed.png"))
			t.Fatalf("%s: %v\npage: %s", step, err, body)
		}
	}
	// clear empties an input (chromedp's SetValue refuses "").
	clear := func(id string) chromedp.Action {
		return chromedp.Evaluate(fmt.Sprintf(`document.getElementById(%q).value = ""`, id), nil)
	}
	text := func(sel string) string {
		t.Helper()
		var s string
		must("read "+sel, chromedp.Text(sel, &s, chromedp.ByQuery))
		return s
	}

	// Log in: a wrong token is refused in words, the right one opens the
	// nodes view, which lists shoal run's agent.
	must("open login", chromedp.Navigate(api+"/console/"), chromedp.WaitVisible("#token", chromedp.ByID))
	must("wrong token", chromedp.SendKeys("#token", "not-the-token", chromedp.ByID), chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible("#login-error", chromedp.ByID))
	if msg := text("#login-error"); !strings.Contains(msg, "not one of the preheat API tokens") {
		t.Fatalf("wrong-token message %q", msg)
	}
	must("log in", clear("token"), chromedp.SendKeys("#token", token, chromedp.ByID),
		chromedp.Click("#login-submit", chromedp.ByID),
		chromedp.WaitVisible(fmt.Sprintf(`#nodes tr[data-node=%q]`, node), chromedp.ByQuery), shot("nodes.png"))
	if row := text(fmt.Sprintf(`#nodes tr[data-node=%q]`, node)); !strings.Contains(row, "alive") || !strings.Contains(row, "127.0.0.1") {
		t.Fatalf("node row %q", row)
	}

	// A bad reference is answered in the form, on the field.
	must("jobs page", chromedp.Click("#nav-jobs", chromedp.ByID), chromedp.WaitVisible("#create-form", chromedp.ByID),
		chromedp.SendKeys("#image", "127.0.0.1:5000/Library/Console-Demo:v1", chromedp.ByID),
		chromedp.Click("#create-submit", chromedp.ByID), chromedp.WaitVisible("#create-error", chromedp.ByID), shot("bad-image.png"))
	if msg := text("#create-error"); !strings.Contains(msg, "must be lowercase") {
		t.Fatalf("bad image message %q", msg)
	}
	var invalid string
	var ok bool
	must("field marked", chromedp.AttributeValue("#image", "aria-invalid", &invalid, &ok, chromedp.ByID))
	if invalid != "true" {
		t.Fatalf("image field aria-invalid = %q", invalid)
	}

	// Preheat the pushed image; the job page follows it to SUCCESS over the
	// event stream: the marker set on the page survives, so no reload.
	must("create job", clear("image"),
		chromedp.SendKeys("#image", "127.0.0.1:5000/library/console-demo:v1", chromedp.ByID),
		chromedp.Click("#create-submit", chromedp.ByID), chromedp.WaitVisible("#job-body table#matrix", chromedp.ByQuery),
		chromedp.Evaluate(`window.__noReload = "still here"`, nil),
		chromedp.WaitVisible(`#job-state .state.SUCCESS`, chromedp.ByQuery), shot("job-success.png"))
	var marker string
	must("no reload", chromedp.Evaluate(`window.__noReload || ""`, &marker))
	if marker != "still here" {
		t.Fatal("the job page reloaded")
	}
	if m := text("#matrix"); strings.Count(m, "✓ done") != 4 { // config + 3 layers on the one node
		t.Fatalf("matrix %q", m)
	}

	// A second job, to a node whose agent accepts connections and never
	// answers (what a hung agent looks like), stays RUNNING until canceled.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range held {
					c.Close()
				}
				return
			}
			held = append(held, c)
		}
	}()
	// It is a member (the test holds the run's join secret), so it enrolls;
	// its TLS handshake never completes.
	heartbeat(t, api, "hung-node", "https://"+ln.Addr().String(), "hung")
	must("second job", chromedp.Click("#nav-jobs", chromedp.ByID), chromedp.WaitVisible("#create-form", chromedp.ByID),
		chromedp.SendKeys("#image", "127.0.0.1:5000/library/console-demo:v1", chromedp.ByID),
		chromedp.SendKeys("#groups", "hung", chromedp.ByID),
		chromedp.Click("#create-submit", chromedp.ByID),
		chromedp.WaitVisible(`#job-state .state.RUNNING`, chromedp.ByQuery), shot("job-running.png"),
		chromedp.Click("#cancel-job", chromedp.ByID),
		chromedp.WaitVisible(`#job-state .state.CANCELED`, chromedp.ByQuery), shot("job-canceled.png"))
	if e := text("#job-error"); !strings.Contains(e, "canceled") {
		t.Fatalf("canceled job reason %q", e)
	}

	// The jobs list shows both, and the savings page draws its chart.
	must("jobs list", chromedp.Click("#nav-jobs", chromedp.ByID), chromedp.WaitVisible(`#jobs tr[data-job]`, chromedp.ByQuery), shot("jobs.png"))
	if l := text("#jobs"); !strings.Contains(l, "SUCCESS") || !strings.Contains(l, "CANCELED") {
		t.Fatalf("jobs list %q", l)
	}
	// The agent's next heartbeat carries what it fetched: the nodes view and
	// the registry-egress chart show it.
	deadline = time.Now().Add(30 * time.Second)
	var fetched int64
	for fetched == 0 && time.Now().Before(deadline) {
		var ns struct{ Nodes []preheat.NodeView }
		call(t, "GET", api+"/api/v1/nodes", map[string]string{"Authorization": "Bearer " + token}, nil, &ns)
		for _, n := range ns.Nodes {
			if n.ID == node {
				fetched = n.BytesFromRegistry + n.BytesFromPeers
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	if fetched < 3*512<<10 {
		t.Fatalf("node reports %d bytes fetched, want the image's 1.5 MiB", fetched)
	}
	must("savings", chromedp.Click("#nav-traffic", chromedp.ByID), chromedp.WaitVisible("#chart svg rect", chromedp.ByQuery),
		chromedp.WaitVisible("#traffic tbody td.num", chromedp.ByQuery), shot("savings.png"),
		chromedp.Click("#nav-nodes", chromedp.ByID), chromedp.WaitVisible(fmt.Sprintf(`#nodes tr[data-node=%q]`, node), chromedp.ByQuery), shot("nodes.png"))
	if row := text(fmt.Sprintf(`#nodes tr[data-node=%q]`, node)); !strings.Contains(row, "MiB") {
		t.Fatalf("node row without its fetched bytes: %q", row)
	}
	// A node in the middle of a long pull: its heartbeat lists the blob in
	// flight, and the nodes view shows how far it is and from where.
	sendHeartbeat(t, api, nodeapi.Heartbeat{ID: "model-node", Address: "https://127.0.0.1:1", Groups: []string{"models"},
		Downloads: []nodeapi.Download{{Digest: "sha256:" + strings.Repeat("ab", 32), Size: 8 << 30,
			BytesFromPeers: 3 << 30, BytesFromRegistry: 1 << 30, BytesPerSecond: 200 << 20, StartedAt: time.Now().Add(-20 * time.Second)}}})
	must("long pull", chromedp.WaitVisible(`#nodes tr[data-downloads-of="model-node"] progress`, chromedp.ByQuery), shot("nodes-downloading.png"))
	if row := text(`#nodes tr[data-downloads-of="model-node"]`); !strings.Contains(row, "4.0 GiB of 8.0 GiB (50%)") || !strings.Contains(row, "75% from nodes") || !strings.Contains(row, "200.0 MiB/s") {
		t.Fatalf("long pull shown as %q", row)
	}
	if tbl := text("#nodes"); strings.Contains(tbl, "null") || strings.Contains(tbl, "undefined") {
		t.Fatalf("nodes view shows a missing value: %q", tbl)
	}
	// The swarms view lists what the tracker holds: the preheated blobs'
	// swarms, seeded by the agent that fetched them and by the registry.
	must("swarms", chromedp.Click("#nav-swarms", chromedp.ByID), chromedp.WaitVisible(`#swarms tbody tr[data-infohash]`, chromedp.ByQuery),
		shot("swarms.png"))
	var peers []int
	must("swarm peers", chromedp.Evaluate(`[...document.querySelectorAll("#swarms tbody tr[data-infohash] td:nth-of-type(1)")].map((td) => Number(td.textContent))`, &peers))
	if len(peers) == 0 || peers[0] < 1 {
		t.Fatalf("swarm peer counts %v, want a swarm with at least one peer", peers)
	}
	if l := text("#swarms-summary"); !strings.Contains(l, "live swarm") {
		t.Fatalf("swarms summary %q", l)
	}
	t.Logf("screenshots in %s", results)
}
