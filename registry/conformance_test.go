package registry

import (
	"encoding/xml"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/testenv"
)

// TestConformance runs the OCI distribution-spec conformance suite against
// the upstream registry and against Shoal (p2p middleware on) in the same
// run. Shoal must pass every test (conformanceExceptions lists the ones it
// may miss, with the reason: none today) and every test the upstream
// registry passes.
func TestConformance(t *testing.T) {
	suite := testenv.ToolBinary(t, "CONFORMANCE_BIN")
	upstreamBin := testenv.ToolBinary(t, "REGISTRY_BIN")

	upAddr := testenv.FreeAddr(t)
	upCfg := filepath.Join(t.TempDir(), "upstream.yml")
	os.WriteFile(upCfg, []byte(fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http: {addr: %q}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
%s`, upAddr, t.TempDir(), conformanceValidation)), 0o644)
	up := testenv.Start(t, "upstream registry", upstreamBin, []string{"serve", upCfg}, "OTEL_TRACES_EXPORTER=none")
	testenv.WaitHTTP(t, up, "http://"+upAddr+"/v2/", 30*time.Second)
	shoal := startRegistry(t, regOpts{extra: conformanceValidation})

	upstream := runConformance(t, suite, upAddr)
	ours := runConformance(t, suite, shoal.Addr)

	var regressions []string
	for name, n := range upstream.passed {
		if ours.passed[name] < n {
			regressions = append(regressions, name)
		}
	}
	sort.Strings(regressions)
	t.Logf("OCI conformance: upstream distribution passed %d of %d; shoal passed %d of %d",
		upstream.suitePassed, upstream.tests, ours.suitePassed, ours.tests)
	excepted := 0
	for _, c := range ours.notPassed {
		if why, ok := conformanceExceptions[c.name]; ok {
			t.Logf("allowed not to pass (%s): %s — %s", c.status, c.name, why)
			excepted++
			continue
		}
		t.Errorf("shoal does not pass (%s): %s", c.status, c.name)
	}
	// The suite counts assertions, several per reported case; without
	// exceptions every one of them must have passed.
	if excepted == 0 && ours.suitePassed != ours.tests {
		t.Errorf("shoal passed %d of the suite's %d tests", ours.suitePassed, ours.tests)
	}
	if ours.suitePassed < upstream.suitePassed {
		t.Errorf("shoal passed fewer conformance tests (%d) than upstream (%d)", ours.suitePassed, upstream.suitePassed)
	}
	for _, r := range regressions {
		t.Errorf("passes on upstream, fails on shoal: %s", r)
	}
	if upstream.total() == 0 {
		t.Fatal("the suite passed nothing against the upstream registry; the harness is broken")
	}
}

type conformanceResult struct {
	tests       int
	suitePassed int            // the suite's own count of passed tests
	passed      map[string]int // reported test name → passing cases (names repeat)
	notPassed   []caseStatus   // failed, errored, skipped and disabled cases
}

type caseStatus struct{ name, status string }

// conformanceExceptions are the suite's tests Shoal is allowed not to pass,
// by name, each with its reason.
var conformanceExceptions = map[string]string{}

func (r conformanceResult) total() int {
	n := 0
	for _, c := range r.passed {
		n += c
	}
	return n
}

func runConformance(t *testing.T, suite, addr string) conformanceResult {
	t.Helper()
	dir := t.TempDir()
	cmd := exec.Command(suite)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(),
		"OCI_REGISTRY="+addr, "OCI_TLS=disabled", "OCI_RESULTS_DIR="+dir, "OCI_LOG=error",
		// Upload cancel is off in the suite's defaults; both registries
		// implement it, so it is tested rather than counted as disabled.
		"OCI_API_BLOBS_UPLOAD_CANCEL=true")
	out, err := cmd.CombinedOutput()
	// The suite exits non-zero whenever anything fails; upstream fails some
	// (referrers, sha512, non-distributable), so only the report decides.
	b, rerr := os.ReadFile(filepath.Join(dir, "junit.xml"))
	if rerr != nil {
		t.Fatalf("conformance against %s wrote no report (%v): %v\n%s", addr, err, rerr, out)
	}
	var suites struct {
		Suites []struct {
			Tests    int `xml:"tests,attr"`
			Failures int `xml:"failures,attr"`
			Errors   int `xml:"errors,attr"`
			Skipped  int `xml:"skipped,attr"`
			Disabled int `xml:"disabled,attr"`
			Cases    []struct {
				Name   string `xml:"name,attr"`
				Status string `xml:"status,attr"`
			} `xml:"testcase"`
		} `xml:"testsuite"`
	}
	if err := xml.Unmarshal(b, &suites); err != nil {
		t.Fatalf("parse junit.xml: %v", err)
	}
	res := conformanceResult{passed: map[string]int{}}
	for _, s := range suites.Suites {
		res.tests += s.Tests
		res.suitePassed += s.Tests - s.Failures - s.Errors - s.Skipped - s.Disabled
		for _, c := range s.Cases {
			if c.Status == "passed" {
				res.passed[c.Name]++
			} else {
				res.notPassed = append(res.notPassed, caseStatus{c.Name, c.Status})
			}
		}
	}
	return res
}

// conformanceValidation lets manifests reference non-distributable layers
// by URL, which the suite pushes. distribution (and so Shoal, which keeps
// its configuration semantics) refuses foreign URLs unless
// validation.manifests.urls.allow says otherwise; both registries get the
// same setting.
const conformanceValidation = "validation: {manifests: {urls: {allow: ['^https?://']}}}\n"
