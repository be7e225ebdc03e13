package agent

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"
	"golang.org/x/sys/unix"

	"github.com/shoalproject/shoal/internal/httpx"
)

// newRouter is every agent listener's router: its misses answer the house
// error shape (the mirror's OCI routes answer their own errors below /v2).
func newRouter() *mux.Router {
	r := mux.NewRouter()
	r.NotFoundHandler = httpx.NotFound()
	r.MethodNotAllowedHandler = httpx.MethodNotAllowed()
	return r
}

// minCacheFree is the free space under which the cache check fails: below
// it the next layer cannot land, and the node should say so before a pull
// does.
const minCacheFree = 64 << 20

// newHealth is /healthz: the cache directory, the BitTorrent client (with
// P2P on) and the preheat heartbeat (with preheat.url set), probed on every
// request.
func (a *Agent) newHealth() *httpx.Health {
	h := httpx.NewHealth("agent").Add("cache", a.checkCache)
	if a.cfg.P2P.Enabled {
		h.Add("p2p", a.checkP2P)
	}
	if a.cfg.Preheat.URL != "" {
		h.Add("preheat", func(context.Context) error {
			return a.obs.hb.health(time.Now(), heartbeatWindow(a.cfg.Preheat.Interval))
		})
	}
	return h
}

// checkCache proves the cache can take a download: a file can be created
// where downloads write, and the filesystem has room.
func (a *Agent) checkCache(context.Context) error {
	dir := filepath.Join(a.cfg.Cache.Dir, "partial")
	f, err := os.CreateTemp(dir, ".healthz-*")
	if err != nil {
		return fmt.Errorf("cache directory not writable: %w", err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return fmt.Errorf("cache directory: %w", err)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fmt.Errorf("cache filesystem: %w", err)
	}
	if free := uint64(st.Bavail) * uint64(st.Bsize); free < minCacheFree {
		return fmt.Errorf("cache filesystem has %d bytes free, under %d", free, minCacheFree)
	}
	return nil
}

// checkP2P reports a BitTorrent client that has stopped: the node then
// neither gets pieces from nor gives them to the others.
func (a *Agent) checkP2P(ctx context.Context) error {
	if a.p2p == nil {
		return errors.New("bittorrent client not started")
	}
	return a.p2p.Check(ctx)
}

// heartbeatTimeout bounds one heartbeat to preheat.
const heartbeatTimeout = 5 * time.Second

// heartbeatWindow is how long the preheat check tolerates no successful
// heartbeat: three missed intervals, so one lost request is no alarm.
func heartbeatWindow(interval time.Duration) time.Duration {
	return 3*interval + heartbeatTimeout
}

// heartbeatState is the heartbeat loop's last outcome, read by /healthz.
type heartbeatState struct {
	mu      sync.Mutex
	since   time.Time // the loop's start
	lastOK  time.Time
	lastErr error
}

func (s *heartbeatState) start(now time.Time) {
	s.mu.Lock()
	s.since = now
	s.mu.Unlock()
}

func (s *heartbeatState) record(now time.Time, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err == nil {
		s.lastOK, s.lastErr = now, nil
		return
	}
	s.lastErr = err
}

// health fails when no heartbeat has succeeded within window: preheat then
// no longer lists this node for its jobs. A loop younger than window is
// given the benefit of the doubt.
func (s *heartbeatState) health(now time.Time, window time.Duration) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.since.IsZero():
		return errors.New("heartbeat not started")
	case now.Sub(s.lastOK) <= window, s.lastOK.IsZero() && now.Sub(s.since) <= window:
		return nil
	case s.lastOK.IsZero():
		return fmt.Errorf("no heartbeat accepted by preheat since %s: %v", s.since.Format(time.RFC3339), s.lastErr)
	}
	return fmt.Errorf("no heartbeat accepted by preheat since %s: %v", s.lastOK.Format(time.RFC3339), s.lastErr)
}

// metricsListenerHandler serves metrics.addr: /metrics and /healthz, behind
// the bearer token when one is configured.
func (a *Agent) metricsListenerHandler() http.Handler {
	r := newRouter()
	r.Handle("/metrics", a.obs.metricsHandler)
	r.Handle("/healthz", a.obs.health)
	if a.obs.metricsToken == "" {
		return r
	}
	return requireBearer(a.obs.metricsToken, r)
}

// loopbackOr admits loopback clients, and others carrying token as a
// bearer token (none when token is empty).
func loopbackOr(token string, next http.Handler) http.Handler {
	guarded := requireBearer(token, next)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, err := net.SplitHostPort(r.RemoteAddr)
		if ip := net.ParseIP(host); err == nil && ip != nil && ip.IsLoopback() {
			next.ServeHTTP(w, r)
			return
		}
		if token == "" {
			httpx.WriteError(w, http.StatusForbidden, httpx.CodeForbidden, "the mirror serves /metrics to loopback clients; scrape metrics.addr with metrics.token")
			return
		}
		guarded.ServeHTTP(w, r)
	})
}

// requireBearer admits requests carrying token as a bearer token. Both
// sides are hashed before the constant-time compare, so neither the
// token's bytes nor its length show in the timing.
func requireBearer(token string, next http.Handler) http.Handler {
	want := sha256.Sum256([]byte(token))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		got := ""
		if len(h) > 7 && strings.EqualFold(h[:7], "Bearer ") {
			got = h[7:]
		}
		sum := sha256.Sum256([]byte(got))
		if got == "" || subtle.ConstantTimeCompare(sum[:], want[:]) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="shoal-agent-metrics"`)
			httpx.WriteError(w, http.StatusUnauthorized, httpx.CodeUnauthorized, "this listener needs metrics.token as a bearer token")
			return
		}
		next.ServeHTTP(w, r)
	})
}
