package webhook

import (
	"encoding/json"
	"strings"
	"testing"
)

func only(repo string) Match {
	return func(r, tag string) (Target, bool) {
		return Target{Groups: []string{"g"}, Platforms: []string{"linux/amd64"}}, r == repo
	}
}

func TestDistribution(t *testing.T) {
	var env Envelope
	body := `{"events":[
	 {"id":"e1","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","repository":"lib/x","tag":"1"}},
	 {"id":"e2","action":"push","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:b","repository":"lib/x"}},
	 {"id":"e3","action":"pull","target":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:a","repository":"lib/x","tag":"1"}},
	 {"id":"e4","action":"push","target":{"mediaType":"application/octet-stream","digest":"sha256:c","repository":"lib/x"}},
	 {"id":"e5","action":"push","target":{"mediaType":"application/vnd.docker.distribution.manifest.v2+json","digest":"sha256:d","repository":"other/y","tag":"2"}},
	 {"action":"push","target":{"mediaType":"application/vnd.oci.image.index.v1+json","digest":"sha256:e","repository":"lib/x","tag":"3","url":"https://r/v2/lib/x/manifests/sha256:e"}}]}`
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	todo, ignored := Distribution(env, "http://reg:5000", only("lib/x"))
	if ignored != 4 || len(todo) != 2 {
		t.Fatalf("todo %+v ignored %d", todo, ignored)
	}
	if todo[0].Delivery != "dist:e1" || todo[0].Image != "http://reg:5000/v2/lib/x/manifests/sha256:a" || todo[0].Groups[0] != "g" || todo[0].Platforms[0] != "linux/amd64" {
		t.Fatalf("first %+v", todo[0])
	}
	if !strings.HasPrefix(todo[1].Delivery, "dist:") || len(todo[1].Delivery) != len("dist:")+32 || todo[1].Image != "https://r/v2/lib/x/manifests/sha256:e" {
		t.Fatalf("second %+v", todo[1])
	}
}

func TestHarbor(t *testing.T) {
	for _, body := range []string{
		`{"type":"PUSH_ARTIFACT","occur_at":1,"event_data":{"resources":[{"digest":"sha256:a","tag":"v1","resource_url":"harbor.local:8443/lib/x:v1"},{"digest":"sha256:b","tag":"sha256:b","resource_url":"harbor.local:8443/lib/x@sha256:b"}],"repository":{"repo_full_name":"lib/x"}}}`,
		`{"specversion":"1.0","id":"ce1","type":"harbor.artifact.pushed","data":{"resources":[{"digest":"sha256:a","tag":"v1","resource_url":"harbor.local:8443/lib/x:v1"},{"digest":"sha256:b","tag":"sha256:b","resource_url":"harbor.local:8443/lib/x@sha256:b"}],"repository":{"repo_full_name":"lib/x"}}}`,
	} {
		var p HarborPayload
		if err := json.Unmarshal([]byte(body), &p); err != nil {
			t.Fatal(err)
		}
		data := HarborData(p)
		if data == nil {
			t.Fatalf("no push in %s", body)
		}
		// The digest push is offered to the policy with no tag.
		var tags []string
		todo, ignored := Harbor(p, data, func(repo, tag string) (Target, bool) { tags = append(tags, tag); return Target{}, repo == "lib/x" })
		if ignored != 0 || len(todo) != 2 || todo[0].Image != "harbor.local:8443/lib/x@sha256:a" || tags[1] != "" {
			t.Fatalf("%s: todo %+v ignored %d tags %q", body, todo, ignored, tags)
		}
		if p.ID != "" && todo[0].Delivery != "harbor:ce1" {
			t.Fatalf("delivery %q", todo[0].Delivery)
		}
	}
	if HarborData(HarborPayload{Type: "DELETE_ARTIFACT", EventData: &HarborEventData{}}) != nil {
		t.Fatal("a delete counted as a push")
	}
}

func TestKraken(t *testing.T) {
	var env Envelope
	body := `{"Events":[{"Id":"k1","Action":"push","Target":{"MediaType":"application/vnd.oci.image.manifest.v1+json","Digest":"sha256:a","Url":"https://h/v2/lib/x/manifests/sha256:a"}},{"Action":"push","Target":{"MediaType":"application/vnd.oci.image.manifest.v1+json"}}]}`
	if err := json.Unmarshal([]byte(body), &env); err != nil {
		t.Fatal(err)
	}
	todo, ignored := Kraken(env, []string{"g"})
	if ignored != 1 || len(todo) != 1 || todo[0].Delivery != "kraken:k1" || todo[0].URL != "https://h/v2/lib/x/manifests/sha256:a" || todo[0].Groups[0] != "g" {
		t.Fatalf("todo %+v ignored %d", todo, ignored)
	}
}
