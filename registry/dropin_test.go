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

	"github.com/shoalproject/shoal/internal/testenv"
)

func digestOf(b []byte) string {
	sum := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(sum[:])
}

// TestDropIn: storage written by the upstream registry is served unchanged
// by Shoal (torrents made lazily), and what Shoal wrote is still read by the
// upstream registry and survives its garbage collector.
func TestDropIn(t *testing.T) {
	upstreamBin := testenv.ToolBinary(t, "REGISTRY_BIN")
	root := t.TempDir()
	addr := testenv.FreeAddr(t)
	upstreamCfg := filepath.Join(t.TempDir(), "upstream.yml")
	os.WriteFile(upstreamCfg, []byte(fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http: {addr: %q}
storage: {filesystem: {rootdirectory: %q}, delete: {enabled: true}}
`, addr, root)), 0o644)
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
