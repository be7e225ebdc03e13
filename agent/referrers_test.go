package agent

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestReferrersThroughMirror: the referrers API of `shoal registry` reaches
// containerd through the mirror (its `referrers` host capability), with the
// artifactType filter and the OCI-Filters-Applied header intact.
func TestReferrersThroughMirror(t *testing.T) {
	reg := startShoalRegistry(t, "", 0, true)
	ag := startAgent(t, testConfig(t, reg))
	base := "http://" + reg
	do := func(method, u string, body []byte, h http.Header) (*http.Response, []byte) {
		t.Helper()
		req, err := http.NewRequest(method, u, bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		for k, v := range h {
			req.Header[k] = v
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	blob := func(data []byte) ocispec.Descriptor {
		t.Helper()
		d := digest.FromBytes(data)
		resp, b := do(http.MethodPost, base+"/v2/signed/app/blobs/uploads/?digest="+url.QueryEscape(d.String()), data,
			http.Header{"Content-Type": {"application/octet-stream"}})
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("push blob: %d %s", resp.StatusCode, b)
		}
		return ocispec.Descriptor{Digest: d, Size: int64(len(data))}
	}
	manifest := func(m ocispec.Manifest) ocispec.Descriptor {
		t.Helper()
		body, _ := json.Marshal(m)
		d := digest.FromBytes(body)
		resp, b := do(http.MethodPut, base+"/v2/signed/app/manifests/"+d.String(), body, http.Header{"Content-Type": {ocispec.MediaTypeImageManifest}})
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("push manifest: %d %s", resp.StatusCode, b)
		}
		return ocispec.Descriptor{MediaType: ocispec.MediaTypeImageManifest, Digest: d, Size: int64(len(body))}
	}
	cfg := blob([]byte(`{"architecture":"amd64","os":"linux"}`))
	cfg.MediaType = ocispec.MediaTypeImageConfig
	layer := blob([]byte("layer bytes"))
	layer.MediaType = ocispec.MediaTypeImageLayer
	subject := manifest(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest, Config: cfg, Layers: []ocispec.Descriptor{layer}})
	empty := blob([]byte("{}"))
	empty.MediaType = ocispec.MediaTypeEmptyJSON
	var sigs []digest.Digest
	for _, at := range []string{"application/vnd.example.sig", "application/vnd.example.sbom"} {
		sigs = append(sigs, manifest(ocispec.Manifest{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: ocispec.MediaTypeImageManifest,
			ArtifactType: at, Config: empty, Layers: []ocispec.Descriptor{empty}, Subject: &subject}).Digest)
	}

	resp, b := do(http.MethodGet, "http://"+ag.mirror+"/v2/signed/app/referrers/"+subject.Digest.String()+"?artifactType=application%2Fvnd.example.sig&ns="+reg, nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Fatalf("referrers through the mirror: %d %q %s", resp.StatusCode, resp.Header.Get("Content-Type"), b)
	}
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" {
		t.Errorf("OCI-Filters-Applied lost on the way: %q", resp.Header.Get("OCI-Filters-Applied"))
	}
	var idx ocispec.Index
	if err := json.Unmarshal(b, &idx); err != nil {
		t.Fatal(err)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != sigs[0] || idx.Manifests[0].ArtifactType != "application/vnd.example.sig" {
		t.Fatalf("filtered referrers through the mirror: %+v", idx.Manifests)
	}
}
