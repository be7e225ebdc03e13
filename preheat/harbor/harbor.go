// Package harbor is Shoal as a Harbor P2P preheat provider, as pure
// translation: Harbor's Dragonfly-driver requests become a job request
// (which groups, one node per group or all), and a job with its progress
// becomes the job Harbor polls. Shapes follow Harbor's drivers in
// src/pkg/p2p/preheat/provider (dragonfly.go, kraken.go) and the Dragonfly
// manager's job API they call; preheat/README.md ("Endpoints", "Harbor
// mapping") says what each endpoint answers.
package harbor

import (
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/httpx"
	"github.com/shoalproject/shoal/preheat/jobs"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// Config covers Shoal acting as a Harbor P2P preheat provider.
//
// Mapping onto node groups: Harbor's Dragonfly driver sends the policy's
// extra_attrs as `scope` and `scheduler_cluster_ids`. Each cluster id is
// looked up in Clusters (id -> groups); no ids (null) means DefaultGroups
// (or every group). Scope: Shoal has no separate seed-peer tier — the
// registry itself seeds — so "all_peers" targets every node of the chosen
// groups, and "single_seed_peer"/"all_seed_peers" target only SeedGroups
// intersected with them when SeedGroups is set (else the same as
// all_peers); single_seed_peer further narrows to one live node per group.
type Config struct {
	// Tokens accepted as "Authorization: Bearer <token>" (Harbor's OAUTH
	// auth mode). With none, the provider routes do not exist unless Auth
	// is "none".
	Tokens config.Tokens `yaml:"tokens"`
	// Auth "none" (Harbor's NONE auth mode) serves the provider routes
	// without a token, to loopback clients only, and only when preheat
	// listens on loopback. Empty: tokens.
	Auth          string           `yaml:"auth"`
	Clusters      map[int][]string `yaml:"clusters"`
	DefaultGroups []string         `yaml:"defaultGroups"`
	SeedGroups    []string         `yaml:"seedGroups"`
}

// Refusal is a request Harbor sent that cannot become a job, with the
// status it is answered with: 422, as Dragonfly's manager answers, unless
// the request is malformed (400).
type Refusal struct {
	Status int
	Msg    string
}

func (e *Refusal) Error() string { return e.Msg }

func refuse(format string, a ...any) error {
	return &Refusal{Status: http.StatusUnprocessableEntity, Msg: fmt.Sprintf(format, a...)}
}

// CreateRequest is what Harbor's Dragonfly driver posts to /oapi/v1/jobs.
type CreateRequest struct {
	Type string `json:"type"`
	Args struct {
		Type    string            `json:"type"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Scope   string            `json:"scope"`
	} `json:"args"`
	SchedulerClusterIDs []int `json:"scheduler_cluster_ids"`
}

// Task is one blob on one node in a job's results.
type Task struct {
	URL         string `json:"url"`
	Hostname    string `json:"hostname"`
	IP          string `json:"ip"`
	Description string `json:"description,omitempty"`
}

// Result is the tasks of one scheduler cluster.
type Result struct {
	SuccessTasks       []Task `json:"success_tasks"`
	FailureTasks       []Task `json:"failure_tasks"`
	SchedulerClusterID int    `json:"scheduler_cluster_id"`
}

// JobState is Dragonfly's per-job result.
type JobState struct {
	State   string   `json:"state"`
	Error   string   `json:"error"`
	Results []Result `json:"results"`
}

// Job is the job as Harbor's Dragonfly driver polls it.
type Job struct {
	ID        int64     `json:"id"`
	TaskID    string    `json:"task_id"`
	Type      string    `json:"type"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Result    struct {
		State     string     `json:"state"`
		JobStates []JobState `json:"job_states"`
	} `json:"result"`
}

// State maps Shoal states onto the three Harbor's driver knows:
// anything unfinished is PENDING (Harbor keeps polling), CANCELED is a
// FAILURE (Harbor would otherwise report "unknown state").
func State(s jobs.State) string {
	switch s {
	case jobs.StateSuccess:
		return "SUCCESS"
	case jobs.StateFailure, jobs.StateCanceled:
		return "FAILURE"
	}
	return "PENDING"
}

// Request is what a Harbor request asks preheat for.
type Request struct {
	URL     string
	Headers map[string]string
	Groups  []string
	// OnePerGroup: scope single_seed_peer.
	OnePerGroup bool
	// ClusterIDs are the scheduler cluster ids asked for, so that each
	// gets its results[] entry.
	ClusterIDs []int
}

// Translate checks a Dragonfly-driver create request and maps it to the
// job it asks for.
func (c Config) Translate(req CreateRequest) (Request, error) {
	switch {
	case req.Type != "preheat":
		return Request{}, refuse("job type %q not supported (want preheat)", req.Type)
	case req.Args.Type != "image":
		return Request{}, refuse("preheat type %q not supported (want image)", req.Args.Type)
	case req.Args.URL == "":
		return Request{}, refuse("args.url is required")
	}
	groups, single, err := c.Groups(req.SchedulerClusterIDs, req.Args.Scope)
	if err != nil {
		return Request{}, err
	}
	return Request{URL: req.Args.URL, Headers: req.Args.Headers, Groups: groups, OnePerGroup: single, ClusterIDs: req.SchedulerClusterIDs}, nil
}

// Groups maps scheduler_cluster_ids and scope to node groups, and says
// whether the scope wants one node per group.
func (c Config) Groups(ids []int, scope string) ([]string, bool, error) {
	switch scope {
	case "", "all_peers", "all_seed_peers", "single_seed_peer":
	default:
		return nil, false, refuse("invalid scope %q: want single_seed_peer, all_seed_peers or all_peers", scope)
	}
	var groups []string
	for _, id := range ids {
		gs, ok := c.Clusters[id]
		if !ok {
			return nil, false, refuse("unknown scheduler cluster id %d (configure harbor.clusters)", id)
		}
		groups = append(groups, gs...)
	}
	if len(ids) == 0 {
		groups = c.DefaultGroups
	}
	if (scope == "all_seed_peers" || scope == "single_seed_peer") && len(c.SeedGroups) > 0 {
		if len(groups) == 0 {
			groups = c.SeedGroups
		} else {
			var in []string
			for _, g := range groups {
				if slices.Contains(c.SeedGroups, g) {
					in = append(in, g)
				}
			}
			if len(in) == 0 {
				return nil, false, refuse("scope %s: none of groups %v is a seed group", scope, groups)
			}
			groups = in
		}
	}
	return groups, scope == "single_seed_peer", nil
}

// Created is the job as the create call answers it: Dragonfly answers
// PENDING whatever the job did meanwhile, and Harbor then polls.
func (c Config) Created(j *jobs.Job, progress []jobs.Progress, blobURL func(digest string) string) *Job {
	v := c.View(j, progress, blobURL)
	v.State = "PENDING"
	return v
}

// View is the job as Harbor polls it: one result per scheduler cluster,
// each blob on each target a success or failure task once it is known.
// blobURL is the registry URL of a blob of the job's repository.
func (c Config) View(j *jobs.Job, progress []jobs.Progress, blobURL func(digest string) string) *Job {
	v := &Job{ID: j.ID, TaskID: "shoal-" + strconv.FormatInt(j.ID, 10), Type: "preheat",
		State: State(j.State), CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt}
	v.Result.State = v.State
	results := c.targetResults(j, progress, blobURL)
	// Every cluster id asked for gets its entry, also one whose groups had
	// no node: Harbor draws one row per cluster.
	for _, cid := range j.ClusterIDs {
		if results[cid] != nil {
			continue
		}
		res := newResult(cid)
		why := fmt.Sprintf("no nodes in scheduler cluster %d (groups %v)", cid, c.Clusters[cid])
		for _, b := range j.Blobs {
			res.FailureTasks = append(res.FailureTasks, Task{URL: blobURL(b.Digest), Description: why})
		}
		results[cid] = res
	}
	order := make([]int, 0, len(results))
	for cid := range results {
		order = append(order, cid)
	}
	sort.Ints(order)
	st := JobState{State: v.State, Error: j.Error, Results: []Result{}}
	for _, cid := range order {
		st.Results = append(st.Results, *results[cid])
	}
	v.Result.JobStates = []JobState{st}
	return v
}

func newResult(cid int) *Result {
	return &Result{SuccessTasks: []Task{}, FailureTasks: []Task{}, SchedulerClusterID: cid}
}

// targetResults sorts the job's targets' tasks into the results of their
// clusters (a target's first group decides; 0 when it has none).
func (c Config) targetResults(j *jobs.Job, progress []jobs.Progress, blobURL func(string) string) map[int]*Result {
	type key struct{ node, digest string }
	byKey := map[key]jobs.Progress{}
	for _, p := range progress {
		byKey[key{p.NodeID, p.Digest}] = p
	}
	clusterOf := c.clusterOfGroup()
	results := map[int]*Result{}
	for _, t := range j.Targets {
		cid := 0
		if len(t.Groups) > 0 {
			cid = clusterOf[t.Groups[0]]
		}
		res := results[cid]
		if res == nil {
			res = newResult(cid)
			results[cid] = res
		}
		ip := t.Address
		if u, err := url.Parse(t.Address); err == nil {
			ip = u.Hostname()
		}
		for _, b := range j.Blobs {
			task := Task{URL: blobURL(b.Digest), Hostname: t.NodeID, IP: ip}
			p, ok := byKey[key{t.NodeID, b.Digest}]
			switch {
			case ok && p.State == jobs.StateSuccess:
				res.SuccessTasks = append(res.SuccessTasks, task)
			case ok && p.State == jobs.StateFailure:
				task.Description = p.Error
				res.FailureTasks = append(res.FailureTasks, task)
			case j.State.Terminal():
				task.Description = "not fetched: job " + string(j.State)
				res.FailureTasks = append(res.FailureTasks, task)
			}
		}
	}
	return results
}

// clusterOfGroup is the lowest cluster id each group belongs to.
func (c Config) clusterOfGroup() map[string]int {
	ids := make([]int, 0, len(c.Clusters))
	for id := range c.Clusters {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	out := map[string]int{}
	for _, id := range ids {
		for _, g := range c.Clusters[id] {
			if _, ok := out[g]; !ok {
				out[g] = id
			}
		}
	}
	return out
}

// LegacyImage is the PreheatImage Harbor 2.1–2.11 posts to /preheats.
type LegacyImage struct {
	Type    string         `json:"type"`
	URL     string         `json:"url"`
	Headers map[string]any `json:"headers"`
	Image   string         `json:"image"`
	Tag     string         `json:"tag"`
	Digest  string         `json:"digest"`
}

// StringHeaders are the image's headers with string values (the others
// are not headers an agent can send).
func (li LegacyImage) StringHeaders() map[string]string {
	out := map[string]string{}
	for k, v := range li.Headers {
		if sv, ok := v.(string); ok {
			out[k] = sv
		}
	}
	return out
}

// Legacy checks a legacy (Harbor 2.1–2.11) create request and maps it to
// the job it asks for: every node of DefaultGroups (the legacy API names
// no clusters or scope).
func (c Config) Legacy(li LegacyImage) (Request, error) {
	if li.Type != "image" || li.URL == "" {
		return Request{}, &Refusal{Status: http.StatusBadRequest, Msg: "want type image and a manifest url"}
	}
	return Request{URL: li.URL, Headers: li.StringHeaders(), Groups: c.KrakenGroups()}, nil
}

// KrakenGroups are the groups of the requests that name no cluster: the
// Kraken driver's notifications and legacy creates.
func (c Config) KrakenGroups() []string {
	groups, _, _ := c.Groups(nil, "")
	return groups
}

// KrakenAnswer is the status and body of the answer to a Kraken-driver
// notification whose jobs were started with res; status is that of the
// first job that failed to start (502 when it had none). Harbor never
// polls this provider and reports any 2xx as a finished preheat, so
// anything that did not start makes the answer non-2xx.
func KrakenAnswer(res webhook.Result, status int) (int, any) {
	if len(res.Errors) == 0 {
		return http.StatusOK, res
	}
	if status < 400 {
		status = http.StatusBadGateway
	}
	return status, map[string]any{"error": strings.Join(res.Errors, "; "), "code": httpx.CodeFor(status),
		"errors": res.Errors, "jobs": res.Jobs}
}

// LegacyStatus is the job as Harbor 2.1–2.11 polls /preheats/{id}.
func LegacyStatus(j *jobs.Job) map[string]string {
	st := map[jobs.State]string{jobs.StatePending: "WAITING", jobs.StateRunning: "RUNNING", jobs.StateSuccess: "SUCCESS",
		jobs.StateFailure: "FAILED", jobs.StateCanceled: "FAILED"}[j.State]
	out := map[string]string{"ID": strconv.FormatInt(j.ID, 10), "Status": st, "errorMsg": j.Error,
		"startTime": j.CreatedAt.Format(time.RFC3339), "finishTime": ""}
	if !j.FinishedAt.IsZero() {
		out["finishTime"] = j.FinishedAt.Format(time.RFC3339)
	}
	return out
}
