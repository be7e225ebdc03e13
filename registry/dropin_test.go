package registry

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/validate"
	"github.com/opencontainers/go-digest"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/shoalproject/shoal/internal/testenv"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// upstreamSetup is an upstream registry's binary and a config for it
// serving a fresh filesystem root on a free loopback address.
func upstreamSetup(t *testing.T) (bin, config, addr, root string) {
	t.Helper()
	bin = testenv.ToolBinary(t, "REGISTRY_BIN")
	root = t.TempDir()
	addr = testenv.FreeAddr(t)
	config = filepath.Join(t.TempDir(), "upstream.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http: {addr: %q}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
`, addr, root)), 0o644); err != nil {
		t.Fatal(err)
	}
	return bin, config, addr, root
}

// TestDropIn: storage written by the upstream registry is served unchanged
// by Shoal (torrents made lazily), and what Shoal wrote is still read by the
// upstream registry and survives its garbage collector.
func TestDropIn(t *testing.T) {
	upstreamBin, upstreamCfg, addr, root := upstreamSetup(t)
	startUpstream := func() *testenv.Process {
		p := testenv.Start(t, "upstream registry", upstreamBin, []string{"serve", upstreamCfg}, "OTEL_TRACES_EXPORTER=none")
		testenv.WaitHTTP(t, p, "http://"+addr+"/v2/", 30*time.Second)
		return p
	}
	pull := func(regAddr, repo string) {
		t.Helper()
		ref, _ := name.ParseReference(regAddr+"/"+repo, name.Insecure)
		img, err := remote.Image(ref)
		if err != nil {
			t.Fatalf("pull %s from %s: %v", repo, regAddr, err)
		}
		if err := validate.Image(img); err != nil {
			t.Fatalf("pulled %s from %s does not validate: %v", repo, regAddr, err)
		}
	}

	up := startUpstream()
	old := pushImage(t, addr, "legacy/app:v1", 200_000, 2)
	up.Stop()

	shoal := startRegistry(t, regOpts{root: root})
	pull(shoal.Addr, "legacy/app:v1")
	layer := layerDigests(t, old)[0]
	meta := filepath.Join(root, "docker/registry/v2/blobs/sha256", layer.Hex[:2], layer.Hex, "torrent")
	if _, err := os.Stat(meta); err == nil {
		t.Fatal("metainfo exists before Shoal saw the blob")
	}
	resp, loc := torrentRedirect(t, shoal.URL(), "legacy/app", layer.String(), nil)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("lazy torrent: %d", resp.StatusCode)
	}
	fetchMetainfo(t, loc)
	if _, err := os.Stat(meta); err != nil {
		t.Fatalf("lazy metainfo not stored: %v", err)
	}
	fresh := pushImage(t, shoal.Addr, "fresh/app:v1", 200_000, 2)
	shoal.proc.Stop()

	up = startUpstream()
	pull(addr, "legacy/app:v1")
	pull(addr, "fresh/app:v1")

	// Delete the fresh image and let the upstream GC sweep its blobs: the
	// metainfo beside them must go with them, the legacy image must stay.
	ref, _ := name.ParseReference(addr+"/fresh/app:v1", name.Insecure)
	desc, err := remote.Head(ref)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Delete(ref.Context().Digest(desc.Digest.String())); err != nil {
		t.Fatalf("delete manifest: %v", err)
	}
	up.Stop()
	out, err := exec.Command(upstreamBin, "garbage-collect", upstreamCfg).CombinedOutput()
	if err != nil {
		t.Fatalf("garbage-collect: %v\n%s", err, out)
	}
	freshLayer := layerDigests(t, fresh)[0]
	freshDir := filepath.Join(root, "docker/registry/v2/blobs/sha256", freshLayer.Hex[:2], freshLayer.Hex)
	if _, err := os.Stat(freshDir); !os.IsNotExist(err) {
		t.Fatalf("GC left the deleted blob's directory (with its metainfo): %v", err)
	}
	if !strings.Contains(string(out), "blob eligible for deletion") {
		t.Logf("gc output:\n%s", out)
	}
	startUpstream()
	pull(addr, "legacy/app:v1")
}

// TestDropInReferrers: what Shoal writes for OCI 1.1 — the referrers index,
// sha512 manifest and blob aliases — is tolerated by the upstream registry
// and its garbage collector (plain and --delete-untagged) on the same
// storage, and referrers that upstream deletes or collects behind Shoal's
// back drop out of Shoal's list.
func TestDropInReferrers(t *testing.T) {
	upstreamBin, upstreamCfg, addr, root := upstreamSetup(t)
	startUpstream := func() (*testenv.Process, ociClient) {
		p := testenv.Start(t, "upstream registry", upstreamBin, []string{"serve", upstreamCfg}, "OTEL_TRACES_EXPORTER=none")
		testenv.WaitHTTP(t, p, "http://"+addr+"/v2/", 30*time.Second)
		return p, ociClient{t: t, base: "http://" + addr}
	}
	gc := func(args ...string) {
		t.Helper()
		out, err := exec.Command(upstreamBin, append([]string{"garbage-collect", upstreamCfg}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("garbage-collect %v: %v\n%s", args, err, out)
		}
	}
	status := func(c ociClient, path string) int {
		t.Helper()
		resp, _ := c.do(http.MethodGet, path, nil, http.Header{"Accept": {v1.MediaTypeImageManifest + "," + v1.MediaTypeImageIndex}})
		return resp.StatusCode
	}
	listed := func(c ociClient, subject digest.Digest) []digest.Digest {
		t.Helper()
		resp, idx := c.referrers(repoSigned, subject, "")
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("referrers: %d", resp.StatusCode)
		}
		var out []digest.Digest
		for _, d := range idx.Manifests {
			out = append(out, d.Digest)
		}
		return out
	}

	shoal := startRegistry(t, regOpts{root: root, noSeeder: true})
	c := ociClient{t: t, base: shoal.URL()}
	subj, _ := pushSubjectImage(t, c, repoSigned, "v1", digest.SHA256)
	sigBody := artifact(t, c, repoSigned, &subj, "application/vnd.example.sig", v1.MediaTypeEmptyJSON, nil)
	sig := digest.FromBytes(sigBody)
	c.putManifest(repoSigned, sig.String(), v1.MediaTypeImageManifest, sigBody) // untagged, as signatures are
	sbomBody := artifact(t, c, repoSigned, &subj, "application/vnd.example.sbom", v1.MediaTypeEmptyJSON, nil)
	sbom := digest.FromBytes(sbomBody)
	c.putManifest(repoSigned, "sbom", v1.MediaTypeImageManifest, sbomBody)
	m512, _ := pushSubjectImage(t, c, repoSigned, "", digest.SHA512)
	if got := listed(c, subj.Digest); len(got) != 2 {
		t.Fatalf("shoal lists %v", got)
	}
	shoal.proc.Stop()

	up, uc := startUpstream()
	for _, p := range []string{"/v2/" + repoSigned + "/manifests/v1", "/v2/" + repoSigned + "/manifests/" + sig.String(),
		"/v2/" + repoSigned + "/manifests/" + m512.Digest.String(), "/v2/" + repoSigned + "/manifests/" + subj.Digest.String()} {
		if s := status(uc, p); s != http.StatusOK {
			t.Fatalf("upstream GET %s: %d", p, s)
		}
	}
	resp, body := uc.do(http.MethodGet, "/v2/_catalog", nil, nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"repositories":["`+repoSigned+`"]}` {
		t.Fatalf("upstream catalog: %d %s", resp.StatusCode, body)
	}
	if resp, body := uc.do(http.MethodDelete, "/v2/"+repoSigned+"/manifests/"+sig.String(), nil, nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("upstream delete of the signature: %d %s", resp.StatusCode, body)
	}
	up.Stop()
	gc()

	shoal.Start()
	if got := listed(c, subj.Digest); len(got) != 1 || got[0] != sbom {
		t.Fatalf("after upstream deleted the signature, shoal lists %v, want [%s]", got, sbom)
	}
	shoal.proc.Stop()
	gc("--delete-untagged")

	up, uc = startUpstream()
	for p, want := range map[string]int{
		"/v2/" + repoSigned + "/manifests/v1":                      200,
		"/v2/" + repoSigned + "/manifests/sbom":                    200,
		"/v2/" + repoSigned + "/manifests/" + m512.Digest.String(): 404, // untagged: collected
	} {
		if s := status(uc, p); s != want {
			t.Errorf("upstream after gc --delete-untagged, GET %s: %d, want %d", p, s, want)
		}
	}
	up.Stop()
	shoal.Start()
	if got := listed(c, subj.Digest); len(got) != 1 || got[0] != sbom {
		t.Fatalf("after gc, shoal lists %v, want [%s]", got, sbom)
	}
	if s := status(c, "/v2/"+repoSigned+"/manifests/"+m512.Digest.String()); s != http.StatusNotFound {
		t.Errorf("collected sha512 manifest: %d", s)
	}
}

const repoSigned = "signed/app"
