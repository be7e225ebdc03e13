package registry

import (
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/internal/regshare"
)

// A range fetched as one node's share is refused to other nodes' share
// fetches for regshare.Hold, served again to the same node (a retry) and
// to anyone once the hold passed or the first fetch failed.
func TestShareLog(t *testing.T) {
	now := time.Unix(1_000_000, 0)
	l := newShareLog(func() time.Time { return now })
	d := digest.FromString("blob")
	steps := []struct {
		name    string
		advance time.Duration
		remote  string
		start   int64
		forget  bool
		want    bool
	}{
		{name: "first owner", remote: "10.0.0.1:1000", want: true},
		{name: "second owner refused", remote: "10.0.0.2:1000", want: false},
		{name: "first owner again (retry, other port)", remote: "10.0.0.1:2000", want: true},
		{name: "another range", remote: "10.0.0.2:1000", start: 1 << 20, want: true},
		{name: "still held", advance: regshare.Hold - time.Second, remote: "10.0.0.3:1000", want: false},
		{name: "hold over", advance: time.Second, remote: "10.0.0.3:1000", want: true},
		{name: "failed fetch forgotten", remote: "10.0.0.3:1000", forget: true},
		{name: "served after a failed fetch", remote: "10.0.0.4:1000", want: true},
	}
	for _, s := range steps {
		now = now.Add(s.advance)
		if s.forget {
			l.forget(d, s.start, s.remote)
			continue
		}
		if got := l.take(d, s.start, s.remote); got != s.want {
			t.Errorf("%s: take = %v, want %v", s.name, got, s.want)
		}
	}
	// Expired entries are dropped, so the log does not grow with time.
	now = now.Add(2 * regshare.Hold)
	l.take(d, 5<<20, "10.0.0.9:1")
	if len(l.m) != 1 {
		t.Errorf("%d entries after the hold passed, want 1", len(l.m))
	}
}
