package registry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/distribution/distribution/v3/configuration"
	"github.com/distribution/distribution/v3/health"
	"github.com/distribution/distribution/v3/registry/api/errcode"
	"github.com/distribution/distribution/v3/registry/handlers"
	"github.com/distribution/distribution/v3/registry/listener"
	gorhandlers "github.com/gorilla/handlers"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/sirupsen/logrus"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// distribution's registry.NewRegistry would build the handler below, but it
// also sets logrus's global level and formatter, registers health checks on
// a process-global registry (a second registry in one process panics), and
// takes outer handlers only from a process-global list; and its server
// listens by itself. So the handler is assembled here from the same parts,
// in the same order, with the health registry and the logger Shoal owns.

// cloneConfig copies what New and distribution write into: the middleware
// lists (Shoal appends its own) and the storage parameters (distribution
// sets a user agent there). The caller's configuration stays as it was, so
// one configuration can build two registries.
func cloneConfig(cfg *configuration.Configuration) *configuration.Configuration {
	c := *cfg
	c.Storage = make(configuration.Storage, len(cfg.Storage))
	for k, p := range cfg.Storage {
		c.Storage[k] = maps.Clone(p)
	}
	c.Middleware = make(map[string][]configuration.Middleware, len(cfg.Middleware))
	for kind, mws := range cfg.Middleware {
		out := make([]configuration.Middleware, len(mws))
		for i, mw := range mws {
			mw.Options = maps.Clone(mw.Options)
			out[i] = mw
		}
		c.Middleware[kind] = out
	}
	return &c
}

// newApp is handlers.NewApp, which panics on a bad configuration (an
// unknown storage driver, a broken middleware), as an error. The app is
// built with http.debug.prometheus off, so that distribution registers
// nothing per app on the process-global registry; instrumentRoutes adds
// the same series on appMetrics.
func newApp(ctx context.Context, cfg *configuration.Configuration, appMetrics prometheus.Registerer) (app *handlers.App, h http.Handler, err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("registry config: %v", p)
		}
	}()
	appCfg := *cfg
	appCfg.HTTP.Debug.Prometheus.Enabled = false
	app = handlers.NewApp(ctx, &appCfg)
	h = app
	if cfg.HTTP.Debug.Prometheus.Enabled {
		if h, err = instrumentRoutes(appMetrics, cfg.HTTP.Prefix, app); err != nil {
			return nil, nil, fmt.Errorf("registry metrics: %w", err)
		}
	}
	return app, h, nil
}

// appHandler wraps app as upstream's NewRegistry does: "/" answers 200,
// failing health checks (health.storagedriver) turn requests away, panics
// are logged, and the access log is written unless disabled.
func appHandler(app http.Handler, hr *health.Registry, cfg *configuration.Configuration, log *logrus.Entry) http.Handler {
	h := app
	next := h
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/" {
			w.Header().Set("Cache-Control", "no-cache")
			w.WriteHeader(http.StatusOK)
			return
		}
		next.ServeHTTP(w, r)
	})
	alive := h
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if len(hr.CheckStatus(r.Context())) != 0 {
			_ = errcode.ServeJSON(w, errcode.ErrorCodeUnavailable.WithDetail("health check failed: please see /debug/health"))
			return
		}
		alive.ServeHTTP(w, r)
	})
	healthy := h
	h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p != http.ErrAbortHandler {
					log.WithField("panic", p).Error("registry handler panicked")
				}
				panic(p) // net/http ends the connection
			}
		}()
		healthy.ServeHTTP(w, r)
	})
	if !cfg.Log.AccessLog.Disabled {
		h = gorhandlers.CombinedLoggingHandler(os.Stdout, h)
	}
	return h
}

// otelHandler names request spans as upstream does. Spans go nowhere unless
// the process set up OpenTelemetry (`shoal registry` does when
// OTEL_TRACES_EXPORTER is set).
func otelHandler(next http.Handler) http.Handler {
	return otelhttp.NewHandler(next, "",
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return r.Method + " " + r.URL.Path }))
}

// healthStatus is distribution's /debug/health page over the registry's own
// health checks.
func healthStatus(hr *health.Registry) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			http.NotFound(w, r)
			return
		}
		checks := hr.CheckStatus(r.Context())
		status := http.StatusOK
		if len(checks) != 0 {
			status = http.StatusServiceUnavailable
		}
		w.Header().Set("Content-Type", "application/json; charset=utf-8")
		w.WriteHeader(status)
		_ = json.NewEncoder(w).Encode(checks)
	})
}

// NewLogger returns a logger of the registry's own configured by
// distribution's log block (level, formatter, reportcaller, fields), as
// upstream configures logrus's global logger.
func NewLogger(cfg *configuration.Configuration) (*logrus.Entry, error) {
	lg := logrus.New()
	lg.SetOutput(os.Stderr)
	lvl, err := logrus.ParseLevel(string(cfg.Log.Level))
	if err != nil {
		return nil, fmt.Errorf("registry config: log.level: %w", err)
	}
	lg.SetLevel(lvl)
	lg.SetReportCaller(cfg.Log.ReportCaller)
	switch cfg.Log.Formatter {
	case "", "text":
		lg.SetFormatter(&logrus.TextFormatter{TimestampFormat: time.RFC3339Nano})
	case "json":
		lg.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano, DisableHTMLEscape: true})
	case "logstash":
		lg.SetFormatter(&logrus.JSONFormatter{TimestampFormat: time.RFC3339Nano, FieldMap: logrus.FieldMap{logrus.FieldKeyFunc: "function"}})
	default:
		return nil, fmt.Errorf("registry config: log.formatter: unsupported %q", cfg.Log.Formatter)
	}
	return lg.WithFields(logrus.Fields(cfg.Log.Fields)).WithField("component", "registry"), nil
}

// Listen opens http.addr on http.net (tcp or unix) as upstream does.
func Listen(cfg *configuration.Configuration) (net.Listener, error) {
	l, err := listener.NewListener(cfg.HTTP.Net, cfg.HTTP.Addr)
	if err != nil {
		return nil, fmt.Errorf("registry: listen on http.addr %s: %w", cfg.HTTP.Addr, err)
	}
	return l, nil
}

// serverProtocols is upstream's: h2c only when http.h2c.enabled.
func serverProtocols(cfg *configuration.Configuration) *http.Protocols {
	if !cfg.HTTP.H2C.Enabled {
		return nil
	}
	p := new(http.Protocols)
	p.SetHTTP1(true)
	p.SetHTTP2(!cfg.HTTP.HTTP2.Disabled)
	p.SetUnencryptedHTTP2(true)
	return p
}

var tlsVersions = map[string]uint16{
	"tls1.2": tls.VersionTLS12,
	"tls1.3": tls.VersionTLS13,
}

var tlsClientAuth = map[configuration.ClientAuth]tls.ClientAuthType{
	configuration.ClientAuthRequestClientCert:          tls.RequestClientCert,
	configuration.ClientAuthRequireAnyClientCert:       tls.RequireAnyClientCert,
	configuration.ClientAuthVerifyClientCertIfGiven:    tls.VerifyClientCertIfGiven,
	configuration.ClientAuthRequireAndVerifyClientCert: tls.RequireAndVerifyClientCert,
}

// defaultCipherSuites are upstream's for TLS 1.2.
var defaultCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_AES_128_GCM_SHA256,
	tls.TLS_CHACHA20_POLY1305_SHA256,
	tls.TLS_AES_256_GCM_SHA384,
}

// tlsConfig is the http.tls block as upstream's ListenAndServe reads it;
// nil without a certificate or Let's Encrypt. It is built in New so a bad
// block stops the start before anything listens.
func tlsConfig(cfg *configuration.Configuration) (*tls.Config, error) {
	t := cfg.HTTP.TLS
	if t.Certificate == "" && t.LetsEncrypt.CacheFile == "" {
		return nil, nil
	}
	minTLS := t.MinimumTLS
	if minTLS == "" {
		minTLS = "tls1.2"
	}
	minVersion, ok := tlsVersions[minTLS]
	if !ok {
		return nil, fmt.Errorf("registry config: unknown http.tls.minimumtls %q", t.MinimumTLS)
	}
	conf := &tls.Config{MinVersion: minVersion, NextProtos: []string{"h2", "http/1.1"}}
	if cfg.HTTP.HTTP2.Disabled {
		conf.NextProtos = []string{"http/1.1"}
	}
	// Cipher suites are not configurable from TLS 1.3 on.
	if minVersion <= tls.VersionTLS12 {
		conf.CipherSuites = defaultCipherSuites
		if len(t.CipherSuites) > 0 {
			conf.CipherSuites = nil
			byName := map[string]uint16{}
			for _, cs := range append(tls.CipherSuites(), tls.InsecureCipherSuites()...) {
				byName[cs.Name] = cs.ID
			}
			for _, name := range t.CipherSuites {
				id, ok := byName[name]
				if !ok {
					return nil, fmt.Errorf("registry config: unknown TLS cipher suite %q in http.tls.ciphersuites", name)
				}
				conf.CipherSuites = append(conf.CipherSuites, id)
			}
		}
	}
	if t.LetsEncrypt.CacheFile != "" {
		if t.Certificate != "" {
			return nil, errors.New("registry config: http.tls: set certificate or letsencrypt, not both")
		}
		m := &autocert.Manager{
			HostPolicy: autocert.HostWhitelist(t.LetsEncrypt.Hosts...),
			Cache:      autocert.DirCache(t.LetsEncrypt.CacheFile),
			Email:      t.LetsEncrypt.Email,
			Prompt:     autocert.AcceptTOS,
		}
		if t.LetsEncrypt.DirectoryURL != "" {
			m.Client = &acme.Client{DirectoryURL: t.LetsEncrypt.DirectoryURL}
		}
		conf.GetCertificate = m.GetCertificate
		conf.NextProtos = append(conf.NextProtos, acme.ALPNProto)
	} else {
		cert, err := tls.LoadX509KeyPair(t.Certificate, t.Key)
		if err != nil {
			return nil, fmt.Errorf("registry config: http.tls: %w", err)
		}
		conf.Certificates = []tls.Certificate{cert}
	}
	if len(t.ClientCAs) > 0 {
		pool := x509.NewCertPool()
		for _, ca := range t.ClientCAs {
			pem, err := os.ReadFile(ca)
			if err != nil {
				return nil, fmt.Errorf("registry config: http.tls.clientcas: %w", err)
			}
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("registry config: http.tls.clientcas: no certificate in %s", ca)
			}
		}
		conf.ClientCAs = pool
		conf.ClientAuth = tls.RequireAndVerifyClientCert
		if t.ClientAuth != "" {
			ca, ok := tlsClientAuth[t.ClientAuth]
			if !ok {
				return nil, fmt.Errorf("registry config: unknown http.tls.clientauth %q", t.ClientAuth)
			}
			conf.ClientAuth = ca
		}
	}
	return conf, nil
}
