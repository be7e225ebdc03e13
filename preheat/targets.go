package preheat

import (
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"sort"
	"strings"
	"time"
)

// TargetSpec says which nodes a job goes to, as Dragonfly's preheat does:
// node groups (none = every node, grouped or not), then node ids or IPs,
// then a count or a percentage of the nodes still eligible.
type TargetSpec struct {
	Groups []string
	// Nodes are node ids or the IPs/hostnames of their addresses.
	Nodes []string
	// Count > 0 keeps that many live eligible nodes; Percentage (1–100)
	// keeps that share, rounded up. At most one of them is set.
	Count      int
	Percentage int
	// OnePerGroup keeps one live node per group (Harbor single_seed_peer).
	OnePerGroup bool
	// Seed varies which nodes a count or percentage picks from job to job,
	// so that repeated small preheats do not all land on the same nodes.
	Seed int64
}

// maxTargetNodes bounds the node list a request may name; larger lists
// are groups.
const maxTargetNodes = 1000

// validate checks the spec before anything is resolved or stored.
func (ts TargetSpec) validate() error {
	if ts.Count < 0 {
		return badRequest("count must not be negative")
	}
	if ts.Percentage < 0 || ts.Percentage > 100 {
		return badRequest("percentage must be between 1 and 100")
	}
	if ts.Count > 0 && ts.Percentage > 0 {
		return badRequest("give count or percentage, not both")
	}
	if len(ts.Nodes) > maxTargetNodes {
		return badRequest("at most %d nodes may be named; use groups for more", maxTargetNodes)
	}
	for _, n := range ts.Nodes {
		if len(n) > 253 || strings.ContainsAny(n, " /\t\n") {
			return badRequest("node %q is not a node id or IP", n)
		}
	}
	return nil
}

// Selection is what selectTargets decided.
type Selection struct {
	Targets []Target
	// EmptyGroups are requested groups without a single eligible node
	// (alive or not): a job cannot have preheated them.
	EmptyGroups []string
	// UnknownNodes are requested node ids/IPs that match no eligible node.
	UnknownNodes []string
}

// Live counts targets with a live heartbeat.
func (s Selection) Live() int {
	n := 0
	for _, t := range s.Targets {
		if !t.Offline {
			n++
		}
	}
	return n
}

// nodeHost is the host part of a node's address (its IP in practice).
func nodeHost(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Hostname()
	}
	return addr
}

func nodeMatches(n Node, want string) bool {
	if n.ID == want {
		return true
	}
	h := nodeHost(n.Address)
	if h == want {
		return true
	}
	a, b := net.ParseIP(h), net.ParseIP(want)
	return a != nil && b != nil && a.Equal(b)
}

// selectTargets freezes the nodes a job dispatches to. Nodes whose
// heartbeat lapsed stay in as Offline so they are reported, not waited on;
// count, percentage and one-per-group pick among live nodes only. Pure:
// the caller passes the node list and the clock.
func selectTargets(nodes []Node, ts TargetSpec, now time.Time) Selection {
	var sel Selection
	sortNodes(nodes)
	var eligible []Target
	seenGroup := map[string]bool{}
	matched := map[string]bool{}
	for _, n := range nodes {
		in := n.Groups
		if len(ts.Groups) > 0 {
			in = nil
			for _, g := range n.Groups {
				if slices.Contains(ts.Groups, g) {
					in = append(in, g)
				}
			}
			if len(in) == 0 {
				continue
			}
		}
		for _, g := range in {
			seenGroup[g] = true
		}
		if len(ts.Nodes) > 0 {
			hit := false
			for _, w := range ts.Nodes {
				if nodeMatches(n, w) {
					matched[w], hit = true, true
				}
			}
			if !hit {
				continue
			}
		}
		eligible = append(eligible, Target{NodeID: n.ID, Address: n.Address, Groups: append([]string{}, in...), Offline: !n.Alive(now)})
	}
	for _, g := range ts.Groups {
		if !seenGroup[g] {
			sel.EmptyGroups = append(sel.EmptyGroups, g)
		}
	}
	for _, w := range ts.Nodes {
		if !matched[w] {
			sel.UnknownNodes = append(sel.UnknownNodes, w)
		}
	}

	switch {
	case ts.OnePerGroup:
		// Ungrouped nodes form one group of their own ("").
		picked := map[string]bool{}
		for _, t := range eligible {
			key := t.Groups
			if len(key) == 0 {
				key = []string{""}
			}
			if t.Offline || picked[key[0]] {
				continue
			}
			for _, g := range key {
				picked[g] = true
			}
			sel.Targets = append(sel.Targets, t)
		}
	case ts.Count > 0 || ts.Percentage > 0:
		var live []Target
		for _, t := range eligible {
			if !t.Offline {
				live = append(live, t)
			}
		}
		want := ts.Count
		if ts.Percentage > 0 {
			want = (len(live)*ts.Percentage + 99) / 100
		}
		want = min(want, len(live))
		// Rendezvous order: stable for one job (a resumed job picks the
		// same nodes), different across jobs.
		rank := func(id string) uint64 {
			var b [8]byte
			binary.BigEndian.PutUint64(b[:], uint64(ts.Seed))
			h := sha256.Sum256(append(b[:], id...))
			return binary.BigEndian.Uint64(h[:8])
		}
		sort.SliceStable(live, func(i, k int) bool { return rank(live[i].NodeID) > rank(live[k].NodeID) })
		sel.Targets = live[:want]
		sort.Slice(sel.Targets, func(i, k int) bool { return sel.Targets[i].NodeID < sel.Targets[k].NodeID })
	default:
		sel.Targets = eligible
	}
	return sel
}

// noTargetsError explains why a spec selects no live node.
func noTargetsError(ts TargetSpec, sel Selection, nodes int) error {
	var why []string
	switch {
	case nodes == 0:
		why = append(why, "no node has sent a heartbeat")
	case len(ts.Groups) > 0:
		why = append(why, fmt.Sprintf("no live node in groups %v", ts.Groups))
	default:
		why = append(why, "no live node")
	}
	if len(ts.Nodes) > 0 {
		why = append(why, fmt.Sprintf("among nodes %v", ts.Nodes))
	}
	return &APIError{Status: http.StatusUnprocessableEntity, Code: CodeNoTargets, Msg: "no target nodes: " + strings.Join(why, " ")}
}
