// Package debugserver is the opt-in profiling listener every Shoal component
// can run: net/http/pprof on a mux of its own, on a loopback address only.
//
// pprof hands out heap and goroutine dumps (memory contents: secrets, tokens,
// credentials held by the process) and lets a caller burn CPU on profiles,
// so the listener is off unless configured and ValidateAddr refuses any
// address beyond loopback. The handlers are registered explicitly on a fresh
// http.ServeMux rather than relying on http.DefaultServeMux, which holds
// whatever every imported package registered in its init.
package debugserver

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"
	"net/netip"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/httpx"
)

// ValidateAddr accepts "" (listener off) or host:port whose host is a
// loopback IP literal or "localhost".
func ValidateAddr(addr string) error {
	if addr == "" {
		return nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("debug addr %q: want host:port on loopback (e.g. 127.0.0.1:6060): %w", addr, err)
	}
	if port == "" {
		return fmt.Errorf("debug addr %q: port is missing (use 0 for any free port)", addr)
	}
	if host == "localhost" {
		return nil
	}
	ip, err := netip.ParseAddr(host)
	if err != nil || !ip.IsLoopback() {
		why := "host " + host + " is not a loopback IP"
		if host == "" {
			why = "an empty host listens on every interface"
		} else if err == nil && ip.IsUnspecified() {
			why = "host " + host + " listens on every interface"
		}
		return fmt.Errorf("debug addr %q: %s; pprof exposes the process's memory contents and must not listen beyond loopback; use 127.0.0.1, [::1] or localhost (reach it remotely through ssh -L or kubectl port-forward)", addr, why)
	}
	return nil
}

// NewMux returns a fresh mux with the net/http/pprof handlers under
// /debug/pprof/. Callers may add more debug handlers before serving it.
func NewMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index) // also the named profiles: heap, goroutine, allocs, block, mutex, threadcreate
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}

// Serve runs the pprof mux (NewMux) on addr until ctx ends. See ServeHandler.
func Serve(ctx context.Context, addr string, log *logrus.Entry) (net.Addr, error) {
	return ServeHandler(ctx, addr, NewMux(), log)
}

// ServeHandler validates addr (ValidateAddr), listens on it and serves h in
// the background until ctx ends. It returns the bound address, so addr may
// use port 0. An empty addr is an error: callers decide whether the
// listener is on.
func ServeHandler(ctx context.Context, addr string, h http.Handler, log *logrus.Entry) (net.Addr, error) {
	if addr == "" {
		return nil, errors.New("debug server: no address")
	}
	if err := ValidateAddr(addr); err != nil {
		return nil, err
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("debug server: listen %s: %w", addr, err)
	}
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	// No write timeout (httpx has none): /debug/pprof/profile and /trace
	// stream for the requested seconds.
	srv := httpx.NewServer(h, log)
	go func() {
		if err := httpx.Serve(ctx, srv, l); err != nil {
			log.WithError(err).Error("debug server stopped")
		}
	}()
	log.WithField("addr", l.Addr().String()).Info("debug server (pprof) listening")
	return l.Addr(), nil
}
