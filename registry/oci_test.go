package registry

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/crypto/bcrypt"
)

// ociClient speaks the distribution API with raw requests, so tests see
// every status and header.
type ociClient struct {
	t    *testing.T
	base string
	h    http.Header
}

func (c ociClient) do(method, path string, body []byte, h http.Header) (*http.Response, []byte) {
	c.t.Helper()
	u := path
	if !strings.HasPrefix(u, "http") {
		u = c.base + path
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, u, rd)
	if err != nil {
		c.t.Fatal(err)
	}
	for k, v := range c.h {
		req.Header[k] = v
	}
	for k, v := range h {
		req.Header[k] = v
	}
	resp, err := noRedirect.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		c.t.Fatal(err)
	}
	return resp, b
}

// postBlob uploads data in one POST (?digest=), digested with alg.
func (c ociClient) postBlob(repo string, data []byte, alg digest.Algorithm) digest.Digest {
	c.t.Helper()
	d := alg.FromBytes(data)
	resp, body := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(d.String()), data,
		http.Header{"Content-Type": {"application/octet-stream"}})
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("POST blob %s to %s: %d %s", d, repo, resp.StatusCode, body)
	}
	if got := resp.Header.Get("Docker-Content-Digest"); got != d.String() {
		c.t.Fatalf("POST blob: Docker-Content-Digest %q, want %q", got, d)
	}
	if !strings.HasSuffix(resp.Header.Get("Location"), "/blobs/"+d.String()) {
		c.t.Fatalf("POST blob: Location %q does not name %s", resp.Header.Get("Location"), d)
	}
	return d
}

func (c ociClient) putManifest(repo, ref, mediaType string, body []byte) *http.Response {
	c.t.Helper()
	resp, b := c.do(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, body, http.Header{"Content-Type": {mediaType}})
	if resp.StatusCode != http.StatusCreated {
		c.t.Fatalf("PUT manifest %s:%s: %d %s", repo, ref, resp.StatusCode, b)
	}
	return resp
}

func (c ociClient) referrers(repo string, subject digest.Digest, artifactType string) (*http.Response, v1.Index) {
	c.t.Helper()
	p := "/v2/" + repo + "/referrers/" + subject.String()
	if artifactType != "" {
		p += "?artifactType=" + url.QueryEscape(artifactType)
	}
	resp, body := c.do(http.MethodGet, p, nil, nil)
	var idx v1.Index
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &idx); err != nil {
			c.t.Fatalf("referrers body: %v: %s", err, body)
		}
		if resp.Header.Get("Content-Type") != v1.MediaTypeImageIndex || idx.MediaType != v1.MediaTypeImageIndex || idx.SchemaVersion != 2 {
			c.t.Fatalf("referrers answer is not an OCI index: %s %s", resp.Header.Get("Content-Type"), body)
		}
		if idx.Manifests == nil {
			c.t.Fatalf("referrers answer has no manifests array: %s", body)
		}
	}
	return resp, idx
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// pushSubjectImage pushes a one-layer image manifest built from blobs
// digested with alg and returns its descriptor and bytes.
func pushSubjectImage(t *testing.T, c ociClient, repo, ref string, alg digest.Algorithm) (v1.Descriptor, []byte) {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]},"x":"` + digest.FromBytes(randomBytes(t, 16)).Encoded() + `"}`)
	layer := randomBytes(t, 3000)
	m := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: c.postBlob(repo, cfg, alg), Size: int64(len(cfg))},
		Layers:    []v1.Descriptor{{MediaType: v1.MediaTypeImageLayer, Digest: c.postBlob(repo, layer, alg), Size: int64(len(layer))}},
	}
	body, _ := json.Marshal(m)
	d := alg.FromBytes(body)
	if ref == "" {
		ref = d.String()
	}
	c.putManifest(repo, ref, v1.MediaTypeImageManifest, body)
	return v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: d, Size: int64(len(body))}, body
}

// artifact builds an artifact manifest for subject.
func artifact(t *testing.T, c ociClient, repo string, subject *v1.Descriptor, artifactType, configType string, ann map[string]string) []byte {
	t.Helper()
	empty := []byte("{}")
	layer := randomBytes(t, 100)
	m := v1.Manifest{
		Versioned:    specs.Versioned{SchemaVersion: 2},
		MediaType:    v1.MediaTypeImageManifest,
		ArtifactType: artifactType,
		Config:       v1.Descriptor{MediaType: configType, Digest: c.postBlob(repo, empty, digest.SHA256), Size: 2},
		Layers:       []v1.Descriptor{{MediaType: "application/octet-stream", Digest: c.postBlob(repo, layer, digest.SHA256), Size: int64(len(layer))}},
		Subject:      subject,
		Annotations:  ann,
	}
	body, _ := json.Marshal(m)
	return body
}

func hasReferrer(idx v1.Index, want v1.Descriptor) bool {
	for _, d := range idx.Manifests {
		if d.Digest == want.Digest && d.MediaType == want.MediaType && d.Size == want.Size && d.ArtifactType == want.ArtifactType {
			for k, v := range want.Annotations {
				if d.Annotations[k] != v {
					return false
				}
			}
			return true
		}
	}
	return false
}

// TestReferrers: manifests with a subject are listed by the referrers API of
// their repository, with the descriptor fields the spec asks for, filtered
// by artifactType on request, and leave the list when deleted.
func TestReferrers(t *testing.T) {
	r := startRegistry(t, regOpts{noSeeder: true})
	c := ociClient{t: t, base: r.URL()}
	const repo = "app/signed"
	subj, _ := pushSubjectImage(t, c, repo, "v1", digest.SHA256)

	sigBody := artifact(t, c, repo, &subj, "application/vnd.example.sig", v1.MediaTypeEmptyJSON, map[string]string{"org.example": "a"})
	sig := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(sigBody), Size: int64(len(sigBody)),
		ArtifactType: "application/vnd.example.sig", Annotations: map[string]string{"org.example": "a"}}
	resp := c.putManifest(repo, sig.Digest.String(), v1.MediaTypeImageManifest, sigBody)
	if got := resp.Header.Get("OCI-Subject"); got != subj.Digest.String() {
		t.Fatalf("OCI-Subject %q, want %s", got, subj.Digest)
	}

	// No artifactType: listed with the config's media type. Pushed by tag.
	sbomBody := artifact(t, c, repo, &subj, "", "application/vnd.example.sbom.config", nil)
	sbom := v1.Descriptor{MediaType: v1.MediaTypeImageManifest, Digest: digest.FromBytes(sbomBody), Size: int64(len(sbomBody)),
		ArtifactType: "application/vnd.example.sbom.config"}
	if got := c.putManifest(repo, "sbom", v1.MediaTypeImageManifest, sbomBody).Header.Get("OCI-Subject"); got != subj.Digest.String() {
		t.Fatalf("OCI-Subject on tag push %q", got)
	}

	idxBody, _ := json.Marshal(v1.Index{Versioned: specs.Versioned{SchemaVersion: 2}, MediaType: v1.MediaTypeImageIndex,
		ArtifactType: "application/vnd.example.idx", Manifests: []v1.Descriptor{}, Subject: &subj})
	idx := v1.Descriptor{MediaType: v1.MediaTypeImageIndex, Digest: digest.FromBytes(idxBody), Size: int64(len(idxBody)),
		ArtifactType: "application/vnd.example.idx"}
	c.putManifest(repo, idx.Digest.String(), v1.MediaTypeImageIndex, idxBody)

	// A manifest without subject gets no header and no entry.
	_, plain := pushSubjectImage(t, c, repo, "", digest.SHA256)
	if got := c.putManifest(repo, "plain", v1.MediaTypeImageManifest, plain).Header.Get("OCI-Subject"); got != "" {
		t.Fatalf("OCI-Subject %q on a manifest without subject", got)
	}

	resp, list := c.referrers(repo, subj.Digest, "")
	if resp.StatusCode != http.StatusOK || len(list.Manifests) != 3 {
		t.Fatalf("referrers: %d, %d entries %+v", resp.StatusCode, len(list.Manifests), list.Manifests)
	}
	for _, want := range []v1.Descriptor{sig, sbom, idx} {
		if !hasReferrer(list, want) {
			t.Errorf("referrers lack %+v: %+v", want, list.Manifests)
		}
	}
	if resp.Header.Get("OCI-Filters-Applied") != "" {
		t.Errorf("OCI-Filters-Applied set without a filter")
	}

	resp, list = c.referrers(repo, subj.Digest, "application/vnd.example.sig")
	if resp.Header.Get("OCI-Filters-Applied") != "artifactType" || len(list.Manifests) != 1 || !hasReferrer(list, sig) {
		t.Fatalf("filtered referrers: %q %+v", resp.Header.Get("OCI-Filters-Applied"), list.Manifests)
	}
	if _, list = c.referrers(repo, subj.Digest, "application/none"); len(list.Manifests) != 0 {
		t.Fatalf("filter matching nothing: %+v", list.Manifests)
	}

	// The index is per repository; unknown subjects and repositories list
	// nothing rather than failing.
	if resp, list = c.referrers("other/repo", subj.Digest, ""); resp.StatusCode != 200 || len(list.Manifests) != 0 {
		t.Fatalf("other repository: %d %+v", resp.StatusCode, list.Manifests)
	}
	if resp, list = c.referrers(repo, digest.FromString("nothing"), ""); resp.StatusCode != 200 || len(list.Manifests) != 0 {
		t.Fatalf("unknown subject: %d %+v", resp.StatusCode, list.Manifests)
	}
	head, body := c.do(http.MethodHead, "/v2/"+repo+"/referrers/"+subj.Digest.String(), nil, nil)
	if head.StatusCode != 200 || len(body) != 0 || head.Header.Get("Content-Type") != v1.MediaTypeImageIndex {
		t.Fatalf("HEAD referrers: %d %q", head.StatusCode, head.Header.Get("Content-Type"))
	}

	if resp, body := c.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+sig.Digest.String(), nil, nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete referrer: %d %s", resp.StatusCode, body)
	}
	_, list = c.referrers(repo, subj.Digest, "")
	if len(list.Manifests) != 2 || hasReferrer(list, sig) {
		t.Fatalf("deleted referrer still listed: %+v", list.Manifests)
	}
	if _, err := os.Stat(filepath.Join(r.Root, "docker/registry/v2/repositories", repo, "_shoal/referrers/sha256", subj.Digest.Encoded(), "sha256", sig.Digest.Encoded())); !os.IsNotExist(err) {
		t.Errorf("index entry of the deleted referrer left behind: %v", err)
	}

	resp, b := c.do(http.MethodGet, "/v2/"+repo+"/referrers/sha256:nothex", nil, nil)
	assertOCIError(t, resp, b, http.StatusBadRequest, "DIGEST_INVALID")
	resp, b = c.do(http.MethodGet, "/v2/Bad_Name/referrers/"+subj.Digest.String(), nil, nil)
	assertOCIError(t, resp, b, http.StatusBadRequest, "NAME_INVALID")
}

// TestReferrersNeedReadAccess: with auth on, the referrers list is subject to
// the repository's pull access, and anonymous mounts are not offered.
func TestReferrersNeedReadAccess(t *testing.T) {
	hash, err := bcrypt.GenerateFromPassword([]byte("secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	htpasswd := filepath.Join(t.TempDir(), "htpasswd")
	if err := os.WriteFile(htpasswd, []byte("alice:"+string(hash)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	r := startRegistry(t, regOpts{noSeeder: true, extra: "auth:\n  htpasswd: {realm: shoal, path: " + htpasswd + "}\n"})
	alice := ociClient{t: t, base: r.URL(), h: http.Header{"Authorization": {"Basic YWxpY2U6c2VjcmV0"}}}
	anon := ociClient{t: t, base: r.URL()}
	const repo = "private/app"
	subj, _ := pushSubjectImage(t, alice, repo, "v1", digest.SHA256)
	body := artifact(t, alice, repo, &subj, "application/vnd.example.sig", v1.MediaTypeEmptyJSON, nil)
	alice.putManifest(repo, digest.FromBytes(body).String(), v1.MediaTypeImageManifest, body)

	resp, b := anon.do(http.MethodGet, "/v2/"+repo+"/referrers/"+subj.Digest.String(), nil, nil)
	assertOCIError(t, resp, b, http.StatusUnauthorized, "UNAUTHORIZED")
	if resp.Header.Get("WWW-Authenticate") == "" {
		t.Error("401 without a challenge")
	}
	wrong := ociClient{t: t, base: r.URL(), h: http.Header{"Authorization": {"Basic YWxpY2U6d3Jvbmc="}}}
	if resp, _ := wrong.do(http.MethodGet, "/v2/"+repo+"/referrers/"+subj.Digest.String(), nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Fatalf("wrong password: %d", resp.StatusCode)
	}
	if resp, list := alice.referrers(repo, subj.Digest, ""); resp.StatusCode != 200 || len(list.Manifests) != 1 {
		t.Fatalf("authorized referrers: %d %+v", resp.StatusCode, list.Manifests)
	}

	// Knowing a digest is no proof of access: without a source repository
	// the mount becomes an ordinary upload session.
	resp, b = alice.do(http.MethodPost, "/v2/elsewhere/blobs/uploads/?mount="+subj.Digest.String(), nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("anonymous mount with auth on: %d %s, want 202", resp.StatusCode, b)
	}
}

// TestSHA512: blobs and manifests addressed by sha512 digests — uploads in
// one POST and in chunks, mounts (from a repository and anonymous), GET and
// HEAD naming the sha512, torrent metadata, manifest push, pull and delete.
func TestSHA512(t *testing.T) {
	r := startRegistry(t, regOpts{noSeeder: true})
	c := ociClient{t: t, base: r.URL()}
	const repo = "algo/sha512"
	data := randomBytes(t, 200_000)
	d := c.postBlob(repo, data, digest.SHA512)
	for _, m := range []string{http.MethodGet, http.MethodHead} {
		resp, b := c.do(m, "/v2/"+repo+"/blobs/"+d.String(), nil, nil)
		if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != d.String() {
			t.Fatalf("%s sha512 blob: %d %q", m, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
		}
		if m == http.MethodGet && !bytes.Equal(b, data) {
			t.Fatal("sha512 blob bytes differ")
		}
	}

	// Torrent metadata: the bytes are stored (and hashed into pieces)
	// under their sha256, which the sha512 link resolves to.
	resp, loc := torrentRedirect(t, r.URL(), repo, d.String(), nil)
	if resp.StatusCode != http.StatusTemporaryRedirect {
		t.Fatalf("torrent for a sha512 blob: %d", resp.StatusCode)
	}
	if mi := fetchMetainfo(t, loc); mi == nil {
		t.Fatal("no metainfo")
	} else if info, err := mi.UnmarshalInfo(); err != nil || info.TotalLength() != int64(len(data)) {
		t.Fatalf("metainfo of the sha512 blob: %v, length %d", err, info.TotalLength())
	}

	// Chunked upload finished with a sha512 digest.
	chunked := randomBytes(t, 5000)
	cd := digest.SHA512.FromBytes(chunked)
	resp, b := c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/", nil, nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d %s", resp.StatusCode, b)
	}
	loc = resp.Header.Get("Location")
	resp, b = c.do(http.MethodPatch, loc, chunked[:3000], http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {"0-2999"}})
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("PATCH: %d %s", resp.StatusCode, b)
	}
	u, _ := url.Parse(resp.Header.Get("Location"))
	q := u.Query()
	q.Set("digest", cd.String())
	u.RawQuery = q.Encode()
	resp, b = c.do(http.MethodPut, u.String(), chunked[3000:], http.Header{"Content-Type": {"application/octet-stream"}, "Content-Range": {"3000-4999"}})
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != cd.String() || !strings.HasSuffix(resp.Header.Get("Location"), cd.String()) {
		t.Fatalf("finish chunked sha512 upload: %d %q %q %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), resp.Header.Get("Location"), b)
	}

	// Mount from repo, and anonymously (no auth configured).
	for _, target := range []string{"algo/mounted?from=" + url.QueryEscape(repo), "algo/anonymous?"} {
		name, from, _ := strings.Cut(target, "?")
		resp, b = c.do(http.MethodPost, "/v2/"+name+"/blobs/uploads/?mount="+url.QueryEscape(d.String())+"&"+from, nil, nil)
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Docker-Content-Digest") != d.String() {
			t.Fatalf("mount into %s: %d %q %s", name, resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), b)
		}
		resp, b = c.do(http.MethodGet, resp.Header.Get("Location"), nil, nil)
		if resp.StatusCode != 200 || !bytes.Equal(b, data) {
			t.Fatalf("GET mounted blob in %s: %d", name, resp.StatusCode)
		}
	}

	// A manifest of sha512 blobs, pushed and pulled by its sha512.
	md, mbody := pushSubjectImage(t, c, repo, "", digest.SHA512)
	resp, b = c.do(http.MethodGet, "/v2/"+repo+"/manifests/"+md.Digest.String(), nil, http.Header{"Accept": {v1.MediaTypeImageManifest}})
	if resp.StatusCode != 200 || !bytes.Equal(b, mbody) || resp.Header.Get("Docker-Content-Digest") != md.Digest.String() {
		t.Fatalf("GET sha512 manifest: %d %q", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"))
	}
	// Stored under its own digest, the way distribution's GC expects.
	v2dir := filepath.Join(r.Root, "docker/registry/v2")
	link, err := os.ReadFile(filepath.Join(v2dir, "repositories", repo, "_manifests/revisions/sha512", md.Digest.Encoded(), "link"))
	if err != nil || string(link) != md.Digest.String() {
		t.Fatalf("sha512 revision link: %v %q", err, link)
	}
	if _, err := os.Stat(filepath.Join(v2dir, "repositories", repo, "_manifests/revisions/sha256", digest.FromBytes(mbody).Encoded())); !os.IsNotExist(err) {
		t.Errorf("sha256 revision of a sha512 manifest left: %v", err)
	}
	for _, dg := range []digest.Digest{md.Digest, d} {
		if b, err := os.ReadFile(filepath.Join(v2dir, "blobs/sha512", dg.Encoded()[:2], dg.Encoded(), "data")); err != nil || digest.SHA512.FromBytes(b) != dg {
			t.Errorf("%s not stored under its own digest: %v", dg, err)
		}
		if link, err := os.ReadFile(filepath.Join(v2dir, "repositories", repo, "_layers/sha512", d.Encoded(), "link")); err != nil || string(link) != d.String() {
			t.Errorf("sha512 layer link: %v %q", err, link)
		}
	}
	resp, b = c.do(http.MethodPut, "/v2/"+repo+"/manifests/"+digest.SHA512.FromString("other").String(), mbody, http.Header{"Content-Type": {v1.MediaTypeImageManifest}})
	assertOCIError(t, resp, b, http.StatusBadRequest, "DIGEST_INVALID")

	if resp, b = c.do(http.MethodDelete, "/v2/"+repo+"/manifests/"+md.Digest.String(), nil, nil); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("delete sha512 manifest: %d %s", resp.StatusCode, b)
	}
	for _, ref := range []digest.Digest{md.Digest, digest.FromBytes(mbody)} {
		if resp, _ = c.do(http.MethodGet, "/v2/"+repo+"/manifests/"+ref.String(), nil, nil); resp.StatusCode != http.StatusNotFound {
			t.Errorf("deleted sha512 manifest still served as %s: %d", ref.Algorithm(), resp.StatusCode)
		}
	}

	// A refused single-POST upload leaves no upload session behind.
	resp, b = c.do(http.MethodPost, "/v2/"+repo+"/blobs/uploads/?digest="+url.QueryEscape(digest.SHA512.FromString("x").String()), []byte("y"), nil)
	assertOCIError(t, resp, b, http.StatusBadRequest, "DIGEST_INVALID")
	// (distribution's cancel may leave an empty hashstates directory for
	// its upload purger; the bytes and the session must be gone.)
	filepath.WalkDir(filepath.Join(r.Root, "docker/registry/v2/repositories", repo, "_uploads"), func(p string, e os.DirEntry, err error) error {
		if err == nil && !e.IsDir() && (e.Name() == "data" || e.Name() == "startedat") {
			t.Errorf("upload file left behind: %s", p)
		}
		return nil
	})
}

// FuzzReferrerOf: any pushed manifest body yields either no subject or a
// valid subject digest and a descriptor of the bytes, never a panic; the
// subject is only ever a valid digest because it becomes a storage path.
func FuzzReferrerOf(f *testing.F) {
	f.Add(v1.MediaTypeImageManifest, []byte(`{"schemaVersion":2,"config":{"mediaType":"a/b","digest":"sha256:`+strings.Repeat("a", 64)+`","size":2},"subject":{"digest":"sha256:`+strings.Repeat("b", 64)+`"}}`))
	f.Add("", []byte(`{"subject":{"digest":"sha256:../../x"}}`))
	f.Add(v1.MediaTypeImageIndex, []byte(`{"artifactType":"x","annotations":{"k":"v"},"subject":{"digest":"sha512:`+strings.Repeat("c", 128)+`"}}`))
	f.Add("", []byte(`[`))
	f.Fuzz(func(t *testing.T, mediaType string, payload []byte) {
		d := digest.FromBytes(payload)
		subject, desc, ok := referrerOf(mediaType, payload, d)
		if !ok {
			return
		}
		if subject.Validate() != nil {
			t.Fatalf("invalid subject %q accepted", subject)
		}
		if desc.Digest != d || desc.Size != int64(len(payload)) {
			t.Fatalf("descriptor %+v does not describe the payload", desc)
		}
		if p := referrerPath("repo", subject, d); !strings.HasPrefix(p, repositoriesDir+"repo/_shoal/referrers/") || strings.Contains(p, "..") {
			t.Fatalf("index path %q escapes the repository", p)
		}
	})
}

// FuzzRoute: the front handler's path split never panics and gives back a
// name and a rest that rebuild the path.
func FuzzRoute(f *testing.F) {
	for _, p := range []string{"/v2/a/b/referrers/sha256:x", "/v2/blobs/blobs/uploads/", "/v2//manifests/", "/v2/x", "/v3/a/blobs/b"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, p string) {
		name, kind, rest, ok := route(p)
		if !ok {
			return
		}
		if name == "" || "/v2/"+name+"/"+kind+"/"+rest != p {
			t.Fatalf("route(%q) = %q %q %q", p, name, kind, rest)
		}
	})
}
