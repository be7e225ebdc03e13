// Package httpx is the one HTTP convention of Shoal's components outside the
// registry API (which speaks OCI errors, as does the agent's mirror):
//
//   - one JSON error shape, ErrorBody: {"error": "<sentence>", "code": "<CODE>"};
//   - one /healthz shape, Health: {"status", "component", "checks": {...}};
//   - one server: NewServer's timeouts and Serve's graceful shutdown, so no
//     listener of Shoal's waits forever on a slow client.
package httpx

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"time"

	"github.com/sirupsen/logrus"
)

// ErrorBody is the JSON body of every error answer outside OCI routes. Error
// is a sentence for people; Code is stable for programs.
type ErrorBody struct {
	Error string `json:"error"`
	Code  string `json:"code"`
}

// Codes every component uses for the same situations; components add their
// own (nodeapi's fetch codes, for instance).
const (
	CodeInvalid          = "INVALID"            // the request is malformed or fails validation (400, 422)
	CodeUnauthorized     = "UNAUTHORIZED"       // no or wrong credentials (401)
	CodeForbidden        = "FORBIDDEN"          // credentials fine, not allowed (403)
	CodeNotFound         = "NOT_FOUND"          // no such resource (404)
	CodeMethodNotAllowed = "METHOD_NOT_ALLOWED" // (405)
	CodeConflict         = "CONFLICT"           // (409)
	CodeTooLarge         = "TOO_LARGE"          // the body is over the limit (413)
	CodeUnavailable      = "UNAVAILABLE"        // a dependency is down; retry later (502, 503, 504)
	CodeInternal         = "INTERNAL"           // a bug or an unexpected failure (500)
)

// CodeFor is the default code of a status, for handlers with nothing more
// specific to say.
func CodeFor(status int) string {
	switch status {
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return CodeInvalid
	case http.StatusUnauthorized:
		return CodeUnauthorized
	case http.StatusForbidden:
		return CodeForbidden
	case http.StatusNotFound:
		return CodeNotFound
	case http.StatusMethodNotAllowed:
		return CodeMethodNotAllowed
	case http.StatusConflict:
		return CodeConflict
	case http.StatusRequestEntityTooLarge:
		return CodeTooLarge
	case http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return CodeUnavailable
	}
	if status >= 500 {
		return CodeInternal
	}
	return CodeInvalid
}

// WriteJSON answers v as JSON with status.
func WriteJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

// WriteError answers the one error shape. An empty code is CodeFor(status).
// msg must not carry secrets or upstream bodies: it is shown to the caller.
func WriteError(w http.ResponseWriter, status int, code, msg string) {
	if code == "" {
		code = CodeFor(status)
	}
	w.Header().Set("Cache-Control", "no-store")
	WriteJSON(w, status, ErrorBody{Error: msg, Code: code})
}

// NotFound and MethodNotAllowed answer a router's misses in the same shape
// (gorilla/mux's NotFoundHandler and MethodNotAllowedHandler).
func NotFound() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusNotFound, CodeNotFound, "no route for "+r.Method+" "+r.URL.Path)
	})
}

// MethodNotAllowed: see NotFound.
func MethodNotAllowed() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		WriteError(w, http.StatusMethodNotAllowed, CodeMethodNotAllowed, r.Method+" is not allowed on "+r.URL.Path)
	})
}

// Timeouts of every Shoal listener. There is deliberately no overall read or
// write timeout: blob bodies take as long as they take, and the agent's and
// registry's bodies are bounded by idle-read watches instead.
const (
	ReadHeaderTimeout = 10 * time.Second
	IdleTimeout       = 2 * time.Minute
	MaxHeaderBytes    = 64 << 10
	ShutdownGrace     = 5 * time.Second
)

// NewServer returns an http.Server with the house timeouts, logging its
// errors (TLS handshakes of strangers, mostly) to log at debug level.
func NewServer(h http.Handler, log *logrus.Entry) *http.Server {
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: ReadHeaderTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
	}
	if log != nil {
		srv.ErrorLog = newStdLogger(log)
	}
	return srv
}

// Serve runs srv on l until ctx ends or the server fails, then shuts it down,
// giving requests in flight ShutdownGrace to finish. It returns nil after a
// shutdown ctx asked for.
func Serve(ctx context.Context, srv *http.Server, l net.Listener) error {
	return ServeGrace(ctx, srv, l, ShutdownGrace)
}

// ServeGrace is Serve with another grace period, for a component whose
// configuration names one (the registry's http.draintimeout).
func ServeGrace(ctx context.Context, srv *http.Server, l net.Listener, grace time.Duration) error {
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	case <-ctx.Done():
	}
	shutCtx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	if err := srv.Shutdown(shutCtx); err != nil {
		_ = srv.Close()
	}
	<-errc
	return nil
}
