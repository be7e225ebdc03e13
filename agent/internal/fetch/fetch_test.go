package fetch

import (
	"testing"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
)

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

// Torrent metadata comes from the upstream (or its storage): whatever its
// bencoded info says, checkInfo accepts only a shape the agent can hold,
// and what it accepts is consistent.
func FuzzCheckInfo(f *testing.F) {
	const hexd = "0123456789012345678901234567890123456789012345678901234567890123"
	for _, info := range []metainfo.Info{
		{Name: hexd, Length: 3 << 20, PieceLength: 1 << 20, Pieces: make([]byte, 3*20)},
		{Name: hexd, Length: 1 << 40, PieceLength: 1 << 40, Pieces: make([]byte, 20)},
		{Name: hexd, Length: 1, PieceLength: 16 << 10, Pieces: make([]byte, 20)},
	} {
		f.Add(bencode.MustMarshal(info), info.Length)
	}
	f.Fuzz(func(t *testing.T, raw []byte, size int64) {
		var info metainfo.Info
		if err := bencode.Unmarshal(raw, &info); err != nil {
			return
		}
		const maxBytes = 1 << 30
		if err := checkInfo(&info, hexd, size, maxBytes); err != nil {
			return
		}
		n := (info.Length + info.PieceLength - 1) / info.PieceLength
		switch {
		case info.Length <= 0 || info.Length > maxBytes || (size >= 0 && info.Length != size):
			t.Fatalf("accepted length %d (upstream said %d)", info.Length, size)
		case info.PieceLength < minPieceLength || info.PieceLength > maxPieceLength || info.PieceLength&(info.PieceLength-1) != 0:
			t.Fatalf("accepted piece length %d", info.PieceLength)
		case int64(info.NumPieces()) != n || n > maxBytes/minPieceLength:
			t.Fatalf("accepted %d pieces for %d bytes", info.NumPieces(), info.Length)
		}
	})
}

// Content-Range comes from the upstream.
func FuzzParseContentRange(f *testing.F) {
	for _, s := range []string{"bytes 0-99/100", "bytes 5-4/10", "bytes 0-0/1", "bytes */100", "bytes -1-5/10", "bytes +1-5/10", "bytes 0-9223372036854775807/9223372036854775807"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, h string) {
		first, last, total, err := parseContentRange(h)
		if err != nil {
			return
		}
		if first < 0 || last < first || total <= last {
			t.Fatalf("parseContentRange(%q) = %d-%d/%d", h, first, last, total)
		}
	})
}

func TestParseContentRange(t *testing.T) {
	for _, tc := range []struct {
		h                  string
		first, last, total int64
		ok                 bool
	}{
		{"bytes 0-99/100", 0, 99, 100, true},
		{"bytes 100-199/1000", 100, 199, 1000, true},
		{"bytes 0-100/100", 0, 0, 0, false},
		{"bytes 5-4/10", 0, 0, 0, false},
		{"bytes */100", 0, 0, 0, false},
		{"bytes +1-5/10", 0, 0, 0, false},
		{"bytes 0-5/*", 0, 0, 0, false},
		{"items 0-5/10", 0, 0, 0, false},
	} {
		first, last, total, err := parseContentRange(tc.h)
		if (err == nil) != tc.ok || (tc.ok && (first != tc.first || last != tc.last || total != tc.total)) {
			t.Errorf("parseContentRange(%q) = %d, %d, %d, %v", tc.h, first, last, total, err)
		}
	}
}
