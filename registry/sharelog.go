package registry

import (
	"net"
	"sync"
	"time"

	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/opencontainers/go-digest"

	"github.com/shoalproject/shoal/internal/regshare"
)

// errorCodeShareTaken answers a share fetch of a range another node
// fetched within regshare.Hold, in the OCI error envelope.
var errorCodeShareTaken = errcode.Register("shoal", errcode.ErrorDescriptor{
	Value:          "SHARE_TAKEN",
	Message:        "another node fetched this range from the registry a moment ago; get it from the swarm",
	Description:    "A node's share fetch (" + regshare.Header + " header) of a range another node fetched as its share within the hold time.",
	HTTPStatusCode: regshare.StatusTaken,
})

// shareLogMax bounds the share log: beyond it, share fetches are served
// without looking (the log never grows with a flood of ranges).
const shareLogMax = 1 << 16

// shareLog remembers which node fetched which range of a blob as its
// share, for regshare.Hold, so that a second owner of the same block is
// refused (regshare).
type shareLog struct {
	now func() time.Time
	mu  sync.Mutex
	m   map[shareKey]shareEntry
	// pruned is when expired entries were last dropped.
	pruned time.Time
}

type shareKey struct {
	dgst  digest.Digest
	start int64
}

type shareEntry struct {
	host string
	at   time.Time
}

func newShareLog(now func() time.Time) *shareLog {
	return &shareLog{now: now, m: map[shareKey]shareEntry{}}
}

// take records that remote (host:port) fetches the range of dgst starting
// at start, and reports false when another host did so within
// regshare.Hold. The same host asking again (a retry) is served.
func (l *shareLog) take(dgst digest.Digest, start int64, remote string) bool {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	now := l.now()
	k := shareKey{dgst, start}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.m[k]; ok && e.host != host && now.Sub(e.at) < regshare.Hold {
		return false
	}
	if now.Sub(l.pruned) >= time.Second {
		l.pruned = now
		for k, e := range l.m {
			if now.Sub(e.at) >= regshare.Hold {
				delete(l.m, k)
			}
		}
	}
	if len(l.m) < shareLogMax {
		l.m[k] = shareEntry{host, now}
	}
	return true
}

// forget drops a fetch that did not complete: another node may have it.
func (l *shareLog) forget(dgst digest.Digest, start int64, remote string) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.m[shareKey{dgst, start}]; ok && e.host == host {
		delete(l.m, shareKey{dgst, start})
	}
}
