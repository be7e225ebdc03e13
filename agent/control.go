package agent

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"

	"github.com/shoalproject/shoal/agent/internal/fetch"
	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/internal/nodeapi"
)

// The control API is how preheat reaches this node. It is served over
// mutual TLS with the cluster's certificates only (cluster.ServerTLS): a
// caller must hold the join secret, and preheat in turn only calls the key
// it enrolled for this node id, so the pull credentials a fetch carries go
// to this node and nowhere else.

// controlListener is the control API's TLS listener.
func (a *Agent) controlListener() (net.Listener, error) {
	l, err := net.Listen("tcp", a.cfg.Control.Addr)
	if err != nil {
		return nil, fmt.Errorf("agent control listen %s: %w", a.cfg.Control.Addr, err)
	}
	return tls.NewListener(l, a.authority.ServerTLS(a.identity)), nil
}

func (a *Agent) controlHandler() http.Handler {
	r := newRouter()
	r.Handle("/healthz", a.obs.health)
	r.Handle("/metrics", a.obs.metricsHandler)
	r.HandleFunc(nodeapi.FetchPath, a.handleFetch).Methods(http.MethodPost)
	return r
}

func (a *Agent) handleFetch(w http.ResponseWriter, r *http.Request) {
	var req nodeapi.FetchRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 1<<20)).Decode(&req); err != nil {
		httpx.WriteError(w, http.StatusBadRequest, nodeapi.CodeInvalid, "invalid JSON: "+err.Error())
		return
	}
	u, err := url.Parse(req.Registry)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		httpx.WriteError(w, http.StatusBadRequest, nodeapi.CodeInvalid, "registry must be http(s)://host[:port]")
		return
	}
	// Only configured upstreams, checked before anything else (the cache
	// included): a request naming another registry is refused outright.
	up, err := a.allowUpstream(req.Registry)
	if err != nil {
		httpx.WriteError(w, http.StatusForbidden, nodeapi.CodeNotConfigured, err.Error())
		return
	}
	base := up.URL
	if !nameRe.MatchString(req.Repository) {
		httpx.WriteError(w, http.StatusBadRequest, nodeapi.CodeInvalid, "invalid repository name")
		return
	}
	algo, hexd, err := parseDigest(req.Digest)
	if err != nil || algo != "sha256" {
		httpx.WriteError(w, http.StatusBadRequest, nodeapi.CodeInvalid, "digest must be sha256:<64 hex>")
		return
	}
	var auth string
	for k, v := range req.Headers {
		if strings.EqualFold(k, "Authorization") {
			auth = v
		}
	}
	if auth == "" && up.Username != "" {
		auth = basicAuth(up.Username, up.Password.Value())
	}
	resp := nodeapi.FetchResponse{Digest: req.Digest}
	if h, ok := a.store.Lookup(hexd); ok {
		verr := h.Verify()
		resp.Size = h.Size()
		h.Release()
		if verr == nil {
			resp.Source = "cache"
			httpx.WriteJSON(w, http.StatusOK, resp)
			return
		}
	}
	f, leave, err := a.fetch.Start(r.Context(), fetch.Request{Base: base, Repo: req.Repository, Hex: hexd, Auth: auth, Size: req.Size})
	if err == nil {
		defer leave()
		err = f.Wait(r.Context())
	}
	if err != nil {
		a.fetchError(w, err, req.Digest)
		return
	}
	o := f.Outcome()
	resp.Size, resp.Source, resp.BytesFromPeers, resp.BytesFromRegistry = f.Blob.Size(), o.Source, o.FromPeers, o.FromRegistry
	if req.Size > 0 && req.Size != resp.Size {
		httpx.WriteError(w, http.StatusBadGateway, nodeapi.CodeSizeMismatch, fmt.Sprintf("blob size %d differs from requested %d", resp.Size, req.Size))
		return
	}
	httpx.WriteJSON(w, http.StatusOK, resp)
}

// fetchError answers a failed fetch in the house error shape.
func (a *Agent) fetchError(w http.ResponseWriter, err error, digest string) {
	var ue *origin.UpstreamError
	var re *origin.RequestError
	switch {
	case errors.As(err, &re):
		code := nodeapi.CodeInvalid
		switch re.Status {
		case http.StatusForbidden:
			code = nodeapi.CodeNotConfigured
		case http.StatusInsufficientStorage:
			code = nodeapi.CodeTooLarge
		case http.StatusBadGateway:
			code = nodeapi.CodeSizeMismatch
		}
		httpx.WriteError(w, re.Status, code, re.Msg)
	case errors.As(err, &ue):
		// The registry's status, never its body: the caller relays
		// what it gets here into job progress.
		status, code := ue.Status, nodeapi.CodeUpstream
		switch ue.Status {
		case http.StatusUnauthorized, http.StatusForbidden:
			code = nodeapi.CodeUpstreamDenied
		case http.StatusNotFound:
			code = nodeapi.CodeBlobUnknown
		}
		if status < 400 {
			status = http.StatusBadGateway
		}
		httpx.WriteError(w, status, code, fmt.Sprintf("the registry answered %d", ue.Status))
	case errors.Is(err, context.Canceled):
	default:
		a.log.WithError(err).WithField("digest", digest).Warn("preheat fetch failed")
		httpx.WriteError(w, http.StatusBadGateway, nodeapi.CodeFetchFailed, "the download failed; see the agent's log")
	}
}

// counterValue reads a Prometheus counter (the heartbeat reports the same
// numbers /metrics does).
func counterValue(c interface{ Write(*dto.Metric) error }) int64 {
	var m dto.Metric
	if c.Write(&m) != nil {
		return 0
	}
	return int64(m.GetCounter().GetValue())
}

// heartbeat is this node as preheat should see it now.
func (a *Agent) heartbeat() nodeapi.Heartbeat {
	used, free := a.store.Usage()
	groups := a.cfg.Node.Groups
	if groups == nil {
		groups = []string{}
	}
	return nodeapi.Heartbeat{
		ID: a.cfg.Node.ID, Address: a.cfg.Control.Advertise, Groups: groups,
		CacheFreeBytes: free, CacheUsedBytes: used,
		StartedAt:          a.obs.started,
		BytesServedToPeers: a.uploadedBytes(),
		BytesFromPeers:     counterValue(a.metrics.bytes.WithLabelValues(sourcePeer)),
		BytesFromRegistry:  counterValue(a.metrics.bytes.WithLabelValues(sourceRegistry)),
		Downloads:          a.metrics.inflight.downloads(time.Now()),
	}
}

// heartbeatLoop enrolls this node with preheat and keeps it alive there:
// each heartbeat is signed with the node's cluster identity.
func (a *Agent) heartbeatLoop(ctx context.Context) {
	c := nodeapi.NewClient(a.authority, a.identity)
	defer c.CloseIdleConnections()
	target := a.cfg.Preheat.URL
	t := time.NewTicker(a.cfg.Preheat.Interval)
	defer t.Stop()
	failing := false
	a.obs.hb.start(time.Now())
	for {
		rctx, cancel := context.WithTimeout(ctx, heartbeatTimeout)
		err := c.Heartbeat(rctx, target, a.heartbeat())
		cancel()
		if ctx.Err() == nil {
			a.obs.hb.record(time.Now(), err)
		}
		if err != nil && !failing && ctx.Err() == nil {
			log := a.log.WithError(err).WithField("url", target)
			var se *nodeapi.StatusError
			if errors.As(err, &se) && se.Detail != "" {
				log = log.WithField("reason", se.Detail)
			}
			log.Warn("preheat heartbeat failed")
		}
		if err == nil && failing {
			a.log.WithField("url", target).Info("preheat heartbeat recovered")
		}
		failing = err != nil
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
