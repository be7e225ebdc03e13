package preheat

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/preheat/image"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/nodes"
)

// admission turns a job request into a stored job: it checks what the
// request names, that it reaches a live node and that preheat has room,
// resolves the image to its blobs, and stores the job (or finds the
// identical one running). Starting the job is the runner's.
type admission struct {
	cfg      Config
	store    Store
	now      func() time.Time
	resolver *image.Resolver
	// registries maps each configured registry host to its base URL.
	registries map[string]string
}

// admit stores the job req asks for, with the agent headers its run needs
// (memory only). Everything that can fail for a bad request fails before
// the job is stored, so a rejected request never leaves a half-created
// job. An identical request while a job runs returns that job
// (created=false).
func (a *admission) admit(ctx context.Context, req JobRequest, source string) (j *Job, created bool, headers map[string]string, err error) {
	ref, err := a.checkRequest(req)
	if err != nil {
		return nil, false, nil, err
	}
	if active, err := a.store.ActiveJobs(ctx); err != nil {
		return nil, false, nil, fmt.Errorf("list active jobs: %w", err)
	} else if len(active) >= a.cfg.MaxActiveJobs {
		return nil, false, nil, &APIError{Status: http.StatusTooManyRequests, Code: httpx.CodeFor(http.StatusTooManyRequests),
			Msg: fmt.Sprintf("%d jobs are unfinished, the most preheat runs at once (maxActiveJobs); wait for some to finish", len(active))}
	}
	spec, err := a.targetSpec(ctx, req)
	if err != nil {
		return nil, false, nil, err
	}
	cred := Credentials{Username: req.Username, Password: req.Password, Headers: req.Headers}
	res, err := a.resolver.Resolve(ctx, ref, req.Platforms, cred)
	if err != nil {
		var re *ResolveError
		if errors.As(err, &re) {
			return nil, false, nil, &APIError{Status: re.Status, Code: httpx.CodeFor(re.Status), Msg: re.Error()}
		}
		return nil, false, nil, err
	}
	got, created, err := a.store.CreateJob(ctx, a.newJob(req, ref, spec, res, source))
	if err != nil {
		return nil, false, nil, fmt.Errorf("store job: %w", err)
	}
	return got, created, res.AgentHeaders, nil
}

// checkRequest checks what a request names before anything is looked up:
// the image (on a configured registry), platforms and sizes.
func (a *admission) checkRequest(req JobRequest) (ImageRef, error) {
	img := req.Image
	if img == "" {
		img = req.URL
	}
	if img == "" {
		return ImageRef{}, badRequest("image (or url) is required")
	}
	ref, err := image.Parse(img, a.cfg.Registry, a.cfg.PlainHTTPRegistries)
	if err != nil {
		return ImageRef{}, badRequest("%v", err)
	}
	if err := image.Check(ref, img); err != nil {
		return ImageRef{}, badRequest("image %q: %v", img, err)
	}
	if ref, err = a.configuredRegistry(ref); err != nil {
		return ImageRef{}, err
	}
	for _, p := range req.Platforms {
		if strings.Count(p, "/") < 1 || strings.Count(p, "/") > 2 {
			return ImageRef{}, badRequest("platform %q: want os/arch[/variant]", p)
		}
	}
	return ref, checkRequestSizes(req)
}

// targetSpec is the request's target, refused unless it reaches a live
// node now rather than failing later: Harbor's Kraken driver never polls,
// so a 2xx here is what its admin sees as the outcome.
func (a *admission) targetSpec(ctx context.Context, req JobRequest) (TargetSpec, error) {
	groups := req.Groups
	if len(groups) == 0 {
		groups = a.cfg.DefaultGroups
	}
	groups = sortedUnique(groups)
	if err := a.checkGroups(ctx, groups); err != nil {
		return TargetSpec{}, err
	}
	spec := TargetSpec{Groups: groups, Nodes: sortedUnique(req.Nodes), Count: req.Count, Percentage: req.Percentage, OnePerGroup: req.onePerGroup}
	if err := validateSpec(spec); err != nil {
		return TargetSpec{}, err
	}
	ns, err := a.store.ListNodes(ctx)
	if err != nil {
		return TargetSpec{}, fmt.Errorf("list nodes: %w", err)
	}
	sel := nodes.Select(ns, spec, a.now())
	if len(sel.UnknownNodes) > 0 {
		return TargetSpec{}, badRequest("unknown nodes %v (no node with that id or IP in the target groups)", sel.UnknownNodes)
	}
	if sel.Live() == 0 {
		return TargetSpec{}, noTargetsError(spec, sel, len(ns))
	}
	return spec, nil
}

// newJob is the record of a checked, resolved request. Its dedupe key is
// everything that makes two requests the same preheat.
func (a *admission) newJob(req JobRequest, ref ImageRef, spec TargetSpec, res *Resolved, source string) *Job {
	platforms := sortedUnique(req.Platforms)
	key := sha256.Sum256([]byte(strings.Join([]string{ref.Registry, ref.Repository, res.Digest, ref.Reference,
		strings.Join(platforms, ","), strings.Join(spec.Groups, ","), fmt.Sprint(req.onePerGroup),
		strings.Join(spec.Nodes, ","), fmt.Sprint(spec.Count, "/", spec.Percentage)}, "\x00")))
	now := a.now().UTC()
	j := &Job{
		State: StatePending,
		Artifact: jobs.Artifact{Image: ref.String(), Registry: ref.Registry, Repository: ref.Repository,
			Reference: ref.Reference, Digest: res.Digest, Platforms: platforms},
		Targeting:  jobs.Targeting{Groups: spec.Groups, Nodes: spec.Nodes, Count: spec.Count, Percentage: spec.Percentage},
		ClusterIDs: req.clusterIDs, Blobs: res.Blobs,
		Bookkeeping: jobs.Bookkeeping{Source: source, NeedsCreds: len(res.AgentHeaders) > 0, DedupeKey: hex.EncodeToString(key[:])},
		Times:       jobs.Times{CreatedAt: now, UpdatedAt: now},
	}
	if req.onePerGroup {
		j.Source += ":single"
	}
	return j
}

// knownGroups is every group a node registered with (alive or not) plus
// groups named in config.
func (a *admission) knownGroups(ctx context.Context) (map[string]bool, []Node, error) {
	nodes, err := a.store.ListNodes(ctx)
	if err != nil {
		return nil, nil, err
	}
	known := map[string]bool{}
	for _, n := range nodes {
		for _, g := range n.Groups {
			known[g] = true
		}
	}
	for _, g := range a.cfg.DefaultGroups {
		known[g] = true
	}
	for _, p := range a.cfg.Policies {
		for _, g := range p.Groups {
			known[g] = true
		}
	}
	for _, gs := range a.cfg.Harbor.Clusters {
		for _, g := range gs {
			known[g] = true
		}
	}
	return known, nodes, nil
}

func (a *admission) checkGroups(ctx context.Context, groups []string) error {
	known, _, err := a.knownGroups(ctx)
	if err != nil {
		return fmt.Errorf("list nodes: %w", err)
	}
	for _, g := range groups {
		if !known[g] {
			return badRequest("unknown group %q (no node registered with it)", g)
		}
	}
	return nil
}

// configuredRegistry refuses an image on a registry preheat is not
// configured for, before any connection: a job's registry is where preheat
// sends the job's credentials and where the agents fetch from. The base URL
// is the configured one (its scheme wins over the reference's).
func (a *admission) configuredRegistry(ref ImageRef) (ImageRef, error) {
	host := ref.Registry
	if i := strings.Index(host, "://"); i >= 0 {
		host = host[i+3:]
	}
	base, ok := a.registries[strings.ToLower(host)]
	if !ok {
		return ref, &APIError{Status: http.StatusBadRequest, Code: CodeRegistryNotAllowed,
			Msg: fmt.Sprintf("registry %s is not configured on this preheat service (registry, registries)", host)}
	}
	ref.Registry = base
	return ref, nil
}
