package fetch

import (
	"testing"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoalproject/shoal/agent/internal/origin"
)

func TestMetaMemo(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := newMetaMemo(time.Minute, 3*(100+256))
	mi := func() *metainfo.MetaInfo { return &metainfo.MetaInfo{InfoBytes: make([]byte, 100)} }
	k := func(i int) origin.Key { return origin.Key{Base: "http://r", Hex: string(rune('a' + i))} }
	for i := range 4 {
		c.put(k(i), mi(), "", t0)
	}
	if _, _, ok := c.get(k(0), t0); ok {
		t.Error("oldest entry kept beyond the size bound")
	}
	for i := 1; i < 4; i++ {
		if _, _, ok := c.get(k(i), t0); !ok {
			t.Errorf("entry %d dropped", i)
		}
	}
	if _, _, ok := c.get(k(3), t0.Add(2*time.Minute)); ok {
		t.Error("entry served past its age")
	}
	c.put(k(3), mi(), "", t0) // replacing does not count twice
	if c.bytes != 3*(100+256) || len(c.order) != 3 {
		t.Errorf("bytes %d, order %d after a replace", c.bytes, len(c.order))
	}
	c.put(k(9), &metainfo.MetaInfo{InfoBytes: make([]byte, 10_000)}, "", t0)
	if _, _, ok := c.get(k(9), t0); ok {
		t.Error("entry larger than the whole bound kept")
	}
}
