package fetch

import (
	"sync"
	"time"

	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoalproject/shoal/agent/internal/origin"
)

// metaMemo keeps the torrent metadata the upstream gave for a blob, so
// that another download of it (after a failed one, or once evicted: a
// lazy puller's next Range) does not wait on the metadata round trips
// again. Bounded by the metadata's size and by age: the registry's signed
// piece URL expires (a refused one falls back to the blob route anyway).
type metaMemo struct {
	mu    sync.Mutex
	ttl   time.Duration
	max   int // bytes of metadata kept
	bytes int
	m     map[origin.Key]*memoEntry
	order []origin.Key // oldest first
}

type memoEntry struct {
	mi      *metainfo.MetaInfo
	dataURL string
	at      time.Time
	size    int
}

func newMetaMemo(ttl time.Duration, maxBytes int) *metaMemo {
	return &metaMemo{ttl: ttl, max: maxBytes, m: map[origin.Key]*memoEntry{}}
}

// get returns the metadata of k if kept and young enough.
func (c *metaMemo) get(k origin.Key, now time.Time) (*metainfo.MetaInfo, string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok || now.Sub(e.at) > c.ttl {
		return nil, "", false
	}
	return e.mi, e.dataURL, true
}

// put keeps mi for k, dropping the oldest entries beyond the bound.
func (c *metaMemo) put(k origin.Key, mi *metainfo.MetaInfo, dataURL string, now time.Time) {
	size := len(mi.InfoBytes) + len(dataURL) + 256
	if size > c.max {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if old, ok := c.m[k]; ok {
		c.bytes -= old.size
		c.drop(k)
	}
	c.m[k] = &memoEntry{mi: mi, dataURL: dataURL, at: now, size: size}
	c.order = append(c.order, k)
	c.bytes += size
	for c.bytes > c.max && len(c.order) > 0 {
		oldest := c.order[0]
		c.bytes -= c.m[oldest].size
		delete(c.m, oldest)
		c.order = c.order[1:]
	}
}

func (c *metaMemo) drop(k origin.Key) {
	delete(c.m, k)
	for i, o := range c.order {
		if o == k {
			c.order = append(c.order[:i], c.order[i+1:]...)
			return
		}
	}
}

// forget drops k's metadata (it did not describe the blob).
func (c *metaMemo) forget(k origin.Key) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.bytes -= e.size
		c.drop(k)
	}
}
