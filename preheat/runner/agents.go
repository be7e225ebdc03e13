package runner

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
)

// NodeKeys is where a node's enrolled key is read (nodes.KeyStore).
type NodeKeys interface {
	NodeKey(ctx context.Context, id string) (ed25519.PublicKey, error)
}

// Agents is the Dispatcher over the agents' control API: each fetch goes
// to the node's enrolled address over mutual TLS pinned to the key it
// enrolled with, so a job's credentials reach only the TLS peer holding
// that key.
type Agents struct {
	Client *nodeapi.Client
	Keys   NodeKeys
	// Timeout bounds one fetch (fetchTimeout).
	Timeout time.Duration
	Log     *logrus.Entry
}

// Agent reads t's enrolled key once for all of the job's fetches to it.
func (a *Agents) Agent(ctx context.Context, t jobs.Target) (Agent, error) {
	key, err := a.Keys.NodeKey(ctx, t.NodeID)
	if err != nil {
		if !errors.Is(err, jobs.ErrNotFound) {
			a.Log.WithError(err).WithField("node", t.NodeID).Warn("cannot read node key")
			return nil, errors.New("cannot read the node's enrolled key")
		}
		return nil, errors.New("node not enrolled (forgotten by an operator); it enrolls again with its next heartbeat")
	}
	return &pinnedAgent{a: a, t: t, key: key}, nil
}

type pinnedAgent struct {
	a   *Agents
	t   jobs.Target
	key ed25519.PublicKey
}

// Fetch asks the agent for one blob. Error messages are fixed per class:
// what an agent or a registry said is logged at debug, never stored in
// progress or returned to API callers.
func (p *pinnedAgent) Fetch(ctx context.Context, req nodeapi.FetchRequest) (*nodeapi.FetchResponse, error) {
	fctx, cancel := context.WithTimeout(ctx, p.a.Timeout)
	defer cancel()
	fr, err := p.a.Client.Fetch(fctx, p.t.Address, p.key, req)
	if err == nil {
		if fr.Digest != "" && fr.Digest != req.Digest {
			return nil, errors.New("agent reported another digest than the one asked for")
		}
		return fr, nil
	}
	log := p.a.Log.WithFields(logrus.Fields{"node": p.t.NodeID, "digest": req.Digest})
	var se *nodeapi.StatusError
	switch {
	case ctx.Err() != nil:
		return nil, context.Cause(ctx)
	case fctx.Err() != nil:
		return nil, fmt.Errorf("agent did not answer within %s", p.a.Timeout)
	case errors.As(err, &se):
		log.WithFields(logrus.Fields{"status": se.Status, "code": se.Code, "detail": se.Detail}).Debug("agent refused a fetch")
		return nil, errors.New(fetchFailure(se))
	case nodeapi.IsPinMismatch(err):
		log.WithError(err).Warn("agent presented another key than the one enrolled; not sending the fetch")
		return nil, &UnreachableError{Msg: "agent at the enrolled address presented another key than the one enrolled"}
	case errors.Is(err, nodeapi.ErrUnreachable):
		log.WithError(err).Debug("agent unreachable")
		return nil, &UnreachableError{Msg: "connection failed"}
	}
	log.WithError(err).Debug("fetch failed")
	return nil, errors.New("agent answered with a malformed response")
}

// fetchFailure is the fixed message for an agent's refusal.
func fetchFailure(se *nodeapi.StatusError) string {
	switch se.Code {
	case nodeapi.CodeInvalid:
		return fmt.Sprintf("agent refused the request as invalid (%d)", se.Status)
	case nodeapi.CodeUpstreamDenied:
		return fmt.Sprintf("registry refused the job's credentials (%d)", se.Status)
	case nodeapi.CodeBlobUnknown:
		return fmt.Sprintf("registry has no such blob (%d)", se.Status)
	case nodeapi.CodeUpstream:
		return fmt.Sprintf("registry answered an error (%d)", se.Status)
	case nodeapi.CodeSizeMismatch:
		return "blob size differs from the manifest's"
	case nodeapi.CodeFetchFailed:
		return fmt.Sprintf("agent could not download the blob (%d)", se.Status)
	case nodeapi.CodeNotConfigured:
		return "the job's registry is not one of the agent's upstreams"
	case nodeapi.CodeTooLarge:
		return "blob larger than the agent's cache"
	}
	switch {
	case se.Status == 401 || se.Status == 403:
		return fmt.Sprintf("agent refused preheat (%d)", se.Status)
	case se.Status >= 500:
		return fmt.Sprintf("agent failed (%d)", se.Status)
	}
	return fmt.Sprintf("agent answered %d", se.Status)
}

// StoreSelector selects among the nodes a store lists (nodes.Store).
type StoreSelector struct {
	Nodes interface {
		ListNodes(ctx context.Context) ([]nodes.Node, error)
	}
}

// Select is nodes.Select over the listed nodes.
func (s StoreSelector) Select(ctx context.Context, spec nodes.TargetSpec, now time.Time) (nodes.Selection, error) {
	ns, err := s.Nodes.ListNodes(ctx)
	if err != nil {
		return nodes.Selection{}, err
	}
	return nodes.Select(ns, spec, now), nil
}
