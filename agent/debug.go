package agent

import (
	"context"

	"github.com/shoalproject/shoal/internal/debugserver"
)

// serveDebug starts the opt-in pprof listener on cfg.Debug.Addr (loopback
// only, checked by Config.Validate) until ctx ends. A failure to listen is
// logged, not fatal: profiling must never keep a node from serving pulls.
func (a *Agent) serveDebug(ctx context.Context) {
	if a.cfg.Debug.Addr == "" {
		return
	}
	if _, err := debugserver.Serve(ctx, a.cfg.Debug.Addr, a.log); err != nil {
		a.log.WithError(err).Warn("debug server not started")
	}
}
