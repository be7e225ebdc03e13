package agent

import (
	"net/http"
	"net/url"
	"testing"

	"github.com/anacrolix/torrent/metainfo"
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
		if got := blobDataURL(resp); got != tc.want {
			t.Errorf("Shoal-Blob-Url %q: got %q, want %q", tc.header, got, tc.want)
		}
	}
}

func TestCheckInfo(t *testing.T) {
	const hexd = "0123456789012345678901234567890123456789012345678901234567890123"
	const maxBytes = 1 << 30
	good := func() metainfo.Info {
		return metainfo.Info{Name: hexd, Length: 3 << 20, PieceLength: 1 << 20, Pieces: make([]byte, 3*20)}
	}
	for _, tc := range []struct {
		name string
		edit func(*metainfo.Info)
		size int64 // what the upstream said, -1 nothing
		ok   bool
	}{
		{"good", func(*metainfo.Info) {}, 3 << 20, true},
		{"good, size unknown", func(*metainfo.Info) {}, -1, true},
		{"longer than the upstream said", func(*metainfo.Info) {}, 3<<20 - 1, false},
		{"another blob", func(i *metainfo.Info) { i.Name = "x" }, -1, false},
		{"zero length", func(i *metainfo.Info) { i.Length = 0 }, -1, false},
		{"longer than the cache", func(i *metainfo.Info) { i.Length = 1 << 40; i.Pieces = make([]byte, 20<<20) }, -1, false},
		{"huge pieces", func(i *metainfo.Info) { i.PieceLength = 1 << 40; i.Pieces = make([]byte, 20) }, -1, false},
		{"smallest pieces", func(i *metainfo.Info) { i.PieceLength = 16 << 10; i.Pieces = make([]byte, 192*20) }, -1, true},
		{"pieces too small", func(i *metainfo.Info) { i.PieceLength = 8 << 10; i.Pieces = make([]byte, 384*20) }, -1, false},
		{"pieces not a power of two", func(i *metainfo.Info) { i.PieceLength = 3 << 18 }, -1, false},
		{"negative piece length", func(i *metainfo.Info) { i.PieceLength = -1 << 20 }, -1, false},
		{"hash count off", func(i *metainfo.Info) { i.Pieces = make([]byte, 2*20) }, -1, false},
		{"several files", func(i *metainfo.Info) { i.Files = []metainfo.FileInfo{{Length: 1}} }, -1, false},
	} {
		info := good()
		tc.edit(&info)
		if err := checkInfo(&info, hexd, tc.size, maxBytes); (err == nil) != tc.ok {
			t.Errorf("%s: checkInfo = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}
