package origin

import (
	"net/http"
	"net/url"
	"testing"
)

func TestBlobDataURL(t *testing.T) {
	served, _ := url.Parse("http://registry.example:5000/_shoal/torrents/sha256:ab?token=t")
	for _, tc := range []struct{ header, want string }{
		{"", ""},
		{"http://registry.example:5000/_shoal/blobs/sha256:ab?repo=x&token=y", "http://registry.example:5000/_shoal/blobs/sha256:ab?repo=x&token=y"},
		{"http://elsewhere.example/_shoal/blobs/sha256:ab?token=y", ""}, // another host: not taken
		{"file:///etc/passwd", ""},
		{"::not a url", ""},
	} {
		resp := &http.Response{Header: http.Header{}, Request: &http.Request{URL: served}}
		if tc.header != "" {
			resp.Header.Set("Shoal-Blob-Url", tc.header)
		}
		if got := BlobDataURL(resp); got != tc.want {
			t.Errorf("Shoal-Blob-Url %q: got %q, want %q", tc.header, got, tc.want)
		}
	}
}

// Registry URLs come from control requests; the allow-list compares their
// normal forms, which must be stable.
func FuzzNormURL(f *testing.F) {
	for _, s := range []string{"http://127.0.0.1:5000", "HTTPS://Registry.Example/", "http://a/b/", "http://u:p@h", "http://h/?x", "ftp://h", "http://[::1]:5000/v2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := NormURL(s)
		if !ok {
			return
		}
		again, ok := NormURL(n)
		if !ok || again != n {
			t.Fatalf("NormURL(%q) = %q, then %q, %v", s, n, again, ok)
		}
	})
}
