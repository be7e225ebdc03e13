package nodes

import (
	"crypto/sha256"
	"encoding/binary"
	"net"
	"net/url"
	"slices"
	"sort"
	"time"

	"github.com/shoalproject/shoal/preheat/jobs"
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

// Selection is what Select decided.
type Selection struct {
	Targets []jobs.Target
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

// host is the host part of a node's address (its IP in practice).
func host(addr string) string {
	if u, err := url.Parse(addr); err == nil && u.Host != "" {
		return u.Hostname()
	}
	return addr
}

func matches(n Node, want string) bool {
	if n.ID == want {
		return true
	}
	h := host(n.Address)
	if h == want {
		return true
	}
	a, b := net.ParseIP(h), net.ParseIP(want)
	return a != nil && b != nil && a.Equal(b)
}

// Select freezes the nodes a job dispatches to. Nodes whose heartbeat
// lapsed stay in as Offline so they are reported, not waited on; count,
// percentage and one-per-group pick among live nodes only. Pure: the
// caller passes the node list and the clock.
func Select(nodes []Node, ts TargetSpec, now time.Time) Selection {
	Sort(nodes)
	sel, eligible := filter(nodes, ts, now)
	switch {
	case ts.OnePerGroup:
		sel.Targets = onePerGroup(eligible)
	case ts.Count > 0 || ts.Percentage > 0:
		sel.Targets = pick(eligible, ts)
	default:
		sel.Targets = eligible
	}
	return sel
}

// filter keeps the nodes in the spec's groups and among its named nodes,
// and notes the groups and names that matched nothing.
func filter(nodes []Node, ts TargetSpec, now time.Time) (sel Selection, eligible []jobs.Target) {
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
				if matches(n, w) {
					matched[w], hit = true, true
				}
			}
			if !hit {
				continue
			}
		}
		eligible = append(eligible, jobs.Target{NodeID: n.ID, Address: n.Address, Groups: append([]string{}, in...), Offline: !n.Alive(now)})
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
	return sel, eligible
}

// onePerGroup keeps the first live node of each group; ungrouped nodes
// form one group of their own ("").
func onePerGroup(eligible []jobs.Target) []jobs.Target {
	var out []jobs.Target
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
		out = append(out, t)
	}
	return out
}

// pick keeps the spec's count or percentage of the live nodes.
func pick(eligible []jobs.Target, ts TargetSpec) []jobs.Target {
	var live []jobs.Target
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
	// Rendezvous order: stable for one job (a resumed job picks the same
	// nodes), different across jobs.
	rank := func(id string) uint64 {
		var b [8]byte
		binary.BigEndian.PutUint64(b[:], uint64(ts.Seed))
		h := sha256.Sum256(append(b[:], id...))
		return binary.BigEndian.Uint64(h[:8])
	}
	sort.SliceStable(live, func(i, k int) bool { return rank(live[i].NodeID) > rank(live[k].NodeID) })
	out := live[:want]
	sort.Slice(out, func(i, k int) bool { return out[i].NodeID < out[k].NodeID })
	return out
}
