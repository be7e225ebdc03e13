package preheat

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/gorilla/mux"

	"github.com/shoalproject/shoal/internal/httpx"
)

// Harbor P2P preheat provider endpoints. Shapes follow Harbor's drivers in
// src/pkg/p2p/preheat/provider (dragonfly.go, kraken.go) and the Dragonfly
// manager's job API they call; preheat/README.md ("Endpoints", "Harbor
// mapping") says what each endpoint answers, and HarborConfig documents the
// scope/cluster mapping.

type dragonflyCreateRequest struct {
	Type string `json:"type"`
	Args struct {
		Type    string            `json:"type"`
		URL     string            `json:"url"`
		Headers map[string]string `json:"headers"`
		Scope   string            `json:"scope"`
	} `json:"args"`
	SchedulerClusterIDs []int `json:"scheduler_cluster_ids"`
}

type dragonflyTask struct {
	URL         string `json:"url"`
	Hostname    string `json:"hostname"`
	IP          string `json:"ip"`
	Description string `json:"description,omitempty"`
}

type dragonflyResult struct {
	SuccessTasks       []dragonflyTask `json:"success_tasks"`
	FailureTasks       []dragonflyTask `json:"failure_tasks"`
	SchedulerClusterID int             `json:"scheduler_cluster_id"`
}

type dragonflyJobState struct {
	State   string            `json:"state"`
	Error   string            `json:"error"`
	Results []dragonflyResult `json:"results"`
}

type dragonflyJob struct {
	ID        int64     `json:"id"`
	TaskID    string    `json:"task_id"`
	Type      string    `json:"type"`
	State     string    `json:"state"`
	CreatedAt time.Time `json:"created_at"`
	UpdatedAt time.Time `json:"updated_at"`
	Result    struct {
		State     string              `json:"state"`
		JobStates []dragonflyJobState `json:"job_states"`
	} `json:"result"`
}

// dragonflyState maps Shoal states onto the three Harbor's driver knows:
// anything unfinished is PENDING (Harbor keeps polling), CANCELED is a
// FAILURE (Harbor would otherwise report "unknown state").
func dragonflyState(s JobState) string {
	switch s {
	case StateSuccess:
		return "SUCCESS"
	case StateFailure, StateCanceled:
		return "FAILURE"
	}
	return "PENDING"
}

// dragonflyErrBody is Dragonfly's manager's error shape ({"errors": "..."}
// on binding errors) carrying Shoal's one shape ("error", "code") too.
type dragonflyErrBody struct {
	Errors string `json:"errors"`
	httpx.ErrorBody
}

func writeDragonflyErr(w http.ResponseWriter, status int, code, msg string) {
	if code == "" {
		code = httpx.CodeFor(status)
	}
	w.Header().Set("Cache-Control", "no-store")
	httpx.WriteJSON(w, status, dragonflyErrBody{Errors: msg, ErrorBody: httpx.ErrorBody{Error: msg, Code: code}})
}

func (s *Service) dragonflyError(w http.ResponseWriter, err error) {
	ae := s.apiError(err)
	writeDragonflyErr(w, ae.Status, ae.Code, ae.Msg)
}

// harborGroups maps scheduler_cluster_ids and scope to node groups.
func (s *Service) harborGroups(ids []int, scope string) ([]string, bool, error) {
	switch scope {
	case "", "all_peers", "all_seed_peers", "single_seed_peer":
	default:
		return nil, false, &APIError{Status: http.StatusUnprocessableEntity, Msg: fmt.Sprintf("invalid scope %q: want single_seed_peer, all_seed_peers or all_peers", scope)}
	}
	var groups []string
	for _, id := range ids {
		gs, ok := s.cfg.Harbor.Clusters[id]
		if !ok {
			return nil, false, &APIError{Status: http.StatusUnprocessableEntity, Msg: fmt.Sprintf("unknown scheduler cluster id %d (configure harbor.clusters)", id)}
		}
		groups = append(groups, gs...)
	}
	if len(ids) == 0 {
		groups = s.cfg.Harbor.DefaultGroups
	}
	if (scope == "all_seed_peers" || scope == "single_seed_peer") && len(s.cfg.Harbor.SeedGroups) > 0 {
		if len(groups) == 0 {
			groups = s.cfg.Harbor.SeedGroups
		} else {
			var in []string
			for _, g := range groups {
				if slices.Contains(s.cfg.Harbor.SeedGroups, g) {
					in = append(in, g)
				}
			}
			if len(in) == 0 {
				return nil, false, &APIError{Status: http.StatusUnprocessableEntity, Msg: fmt.Sprintf("scope %s: none of groups %v is a seed group", scope, groups)}
			}
			groups = in
		}
	}
	return groups, scope == "single_seed_peer", nil
}

func (s *Service) handleDragonflyCreate(w http.ResponseWriter, r *http.Request) {
	var req dragonflyCreateRequest
	if err := decode(r, &req); err != nil {
		var ae *APIError
		if errors.As(err, &ae) && ae.Status == http.StatusBadRequest {
			ae.Status = http.StatusUnprocessableEntity
		}
		s.dragonflyError(w, err)
		return
	}
	if req.Type != "preheat" {
		writeDragonflyErr(w, http.StatusUnprocessableEntity, "", fmt.Sprintf("job type %q not supported (want preheat)", req.Type))
		return
	}
	if req.Args.Type != "image" {
		writeDragonflyErr(w, http.StatusUnprocessableEntity, "", fmt.Sprintf("preheat type %q not supported (want image)", req.Args.Type))
		return
	}
	if req.Args.URL == "" {
		writeDragonflyErr(w, http.StatusUnprocessableEntity, "", "args.url is required")
		return
	}
	groups, single, err := s.harborGroups(req.SchedulerClusterIDs, req.Args.Scope)
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	j, _, err := s.CreateJob(r.Context(), JobRequest{URL: req.Args.URL, Headers: req.Args.Headers, Groups: groups, onePerGroup: single, clusterIDs: req.SchedulerClusterIDs}, "dragonfly")
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	v := s.dragonflyView(r, j)
	v.State = "PENDING" // what Dragonfly answers on create; Harbor then polls
	httpx.WriteJSON(w, http.StatusOK, v)
}

func (s *Service) dragonflyView(r *http.Request, j *Job) *dragonflyJob {
	v := &dragonflyJob{ID: j.ID, TaskID: "shoal-" + strconv.FormatInt(j.ID, 10), Type: "preheat",
		State: dragonflyState(j.State), CreatedAt: j.CreatedAt, UpdatedAt: j.UpdatedAt}
	v.Result.State = v.State
	clusterOf := map[string]int{}
	ids := make([]int, 0, len(s.cfg.Harbor.Clusters))
	for id := range s.cfg.Harbor.Clusters {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		for _, g := range s.cfg.Harbor.Clusters[id] {
			if _, ok := clusterOf[g]; !ok {
				clusterOf[g] = id
			}
		}
	}
	ps, _ := s.store.ListProgress(r.Context(), j.ID)
	byKey := map[string]Progress{}
	for _, p := range ps {
		byKey[progressField(p.NodeID, p.Digest)] = p
	}
	results := map[int]*dragonflyResult{}
	var order []int
	ref := ImageRef{Registry: j.Registry, Repository: j.Repository}
	for _, t := range j.Targets {
		cid := 0
		if len(t.Groups) > 0 {
			cid = clusterOf[t.Groups[0]]
		}
		res := results[cid]
		if res == nil {
			res = &dragonflyResult{SuccessTasks: []dragonflyTask{}, FailureTasks: []dragonflyTask{}, SchedulerClusterID: cid}
			results[cid] = res
			order = append(order, cid)
		}
		ip := t.Address
		if u, err := url.Parse(t.Address); err == nil {
			ip = u.Hostname()
		}
		for _, b := range j.Blobs {
			task := dragonflyTask{URL: ref.BlobURL(b.Digest), Hostname: t.NodeID, IP: ip}
			p, ok := byKey[progressField(t.NodeID, b.Digest)]
			switch {
			case ok && p.State == StateSuccess:
				res.SuccessTasks = append(res.SuccessTasks, task)
			case ok && p.State == StateFailure:
				task.Description = p.Error
				res.FailureTasks = append(res.FailureTasks, task)
			case j.State.Terminal():
				task.Description = "not fetched: job " + string(j.State)
				res.FailureTasks = append(res.FailureTasks, task)
			}
		}
	}
	// Every cluster id asked for gets its entry, also one whose groups had
	// no node: Harbor draws one row per cluster.
	for _, cid := range j.ClusterIDs {
		if results[cid] != nil {
			continue
		}
		res := &dragonflyResult{SuccessTasks: []dragonflyTask{}, FailureTasks: []dragonflyTask{}, SchedulerClusterID: cid}
		results[cid] = res
		order = append(order, cid)
		why := fmt.Sprintf("no nodes in scheduler cluster %d (groups %v)", cid, s.cfg.Harbor.Clusters[cid])
		for _, b := range j.Blobs {
			res.FailureTasks = append(res.FailureTasks, dragonflyTask{URL: ref.BlobURL(b.Digest), Description: why})
		}
	}
	sort.Ints(order)
	st := dragonflyJobState{State: v.State, Error: j.Error, Results: []dragonflyResult{}}
	for _, cid := range order {
		st.Results = append(st.Results, *results[cid])
	}
	v.Result.JobStates = []dragonflyJobState{st}
	return v
}

func (s *Service) handleDragonflyGet(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		writeDragonflyErr(w, http.StatusBadRequest, "", "job id must be an integer")
		return
	}
	j, err := s.store.GetJob(r.Context(), id)
	if err != nil {
		s.dragonflyError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, s.dragonflyView(r, j))
}

// legacyImage is the PreheatImage Harbor 2.1–2.11 posts to /preheats.
type legacyImage struct {
	Type    string         `json:"type"`
	URL     string         `json:"url"`
	Headers map[string]any `json:"headers"`
	Image   string         `json:"image"`
	Tag     string         `json:"tag"`
	Digest  string         `json:"digest"`
}

func (s *Service) handleLegacyCreate(w http.ResponseWriter, r *http.Request) {
	var req legacyImage
	if err := decode(r, &req); err != nil {
		s.writeError(w, err)
		return
	}
	if req.Type != "image" || req.URL == "" {
		httpx.WriteError(w, http.StatusBadRequest, "", "want type image and a manifest url")
		return
	}
	headers := map[string]string{}
	for k, v := range req.Headers {
		if sv, ok := v.(string); ok {
			headers[k] = sv
		}
	}
	groups, _, _ := s.harborGroups(nil, "")
	j, _, err := s.CreateJob(r.Context(), JobRequest{URL: req.URL, Headers: headers, Groups: groups}, "dragonfly-legacy")
	if err != nil {
		s.writeError(w, err)
		return
	}
	httpx.WriteJSON(w, http.StatusOK, map[string]string{"ID": strconv.FormatInt(j.ID, 10)})
}

func (s *Service) handleLegacyGet(w http.ResponseWriter, r *http.Request) {
	id, err := strconv.ParseInt(mux.Vars(r)["id"], 10, 64)
	if err != nil {
		httpx.WriteError(w, http.StatusBadRequest, "", "task id must be an integer")
		return
	}
	j, err := s.store.GetJob(r.Context(), id)
	if err != nil {
		s.writeError(w, err)
		return
	}
	st := map[JobState]string{StatePending: "WAITING", StateRunning: "RUNNING", StateSuccess: "SUCCESS", StateFailure: "FAILED", StateCanceled: "FAILED"}[j.State]
	out := map[string]string{"ID": strconv.FormatInt(j.ID, 10), "Status": st, "errorMsg": j.Error,
		"startTime": j.CreatedAt.Format(time.RFC3339), "finishTime": ""}
	if !j.FinishedAt.IsZero() {
		out["finishTime"] = j.FinishedAt.Format(time.RFC3339)
	}
	httpx.WriteJSON(w, http.StatusOK, out)
}

// handleKraken accepts Harbor's Kraken-driver notification (capitalised
// keys; decoded by the same struct as distribution envelopes). Harbor
// reports SUCCESS as soon as we answer 2xx, so a failure to start any job
// is answered non-2xx (the failure's own status: 422 no target nodes, 404
// image not found, 502 registry unreachable) to surface it in Harbor.
func (s *Service) handleKraken(w http.ResponseWriter, r *http.Request) {
	var env Envelope
	if err := decode(r, &env); err != nil {
		s.writeError(w, err)
		return
	}
	if len(env.Events) == 0 {
		httpx.WriteError(w, http.StatusBadRequest, "", "notification has no events")
		return
	}
	if err := s.checkFanOut(len(env.Events), "events"); err != nil {
		s.writeError(w, err)
		return
	}
	groups, _, _ := s.harborGroups(nil, "")
	res := WebhookResult{Jobs: []int64{}}
	var todo []pendingJob
	for _, ev := range env.Events {
		if ev.Action != "push" || !isManifestType(ev.Target.MediaType) || ev.Target.URL == "" {
			res.Ignored++
			continue
		}
		seen := "kraken:" + ev.ID
		if ev.ID == "" {
			seen = "kraken:" + hashKey(ev.Target.URL, ev.Target.Digest)
		}
		todo = append(todo, pendingJob{seen, JobRequest{URL: ev.Target.URL, Groups: groups}})
	}
	if err := s.startAll(r.Context(), &res, todo, "kraken"); err != nil {
		s.writeError(w, err)
		return
	}
	// Any event that could not be started makes the answer non-2xx: Harbor
	// never polls this provider, so a 2xx is reported as a finished preheat.
	if len(res.Errors) > 0 {
		status := res.status
		if status < 400 {
			status = http.StatusBadGateway
		}
		w.Header().Set("Cache-Control", "no-store")
		httpx.WriteJSON(w, status, map[string]any{"error": strings.Join(res.Errors, "; "), "code": httpx.CodeFor(status),
			"errors": res.Errors, "jobs": res.Jobs})
		return
	}
	httpx.WriteJSON(w, http.StatusOK, res)
}
