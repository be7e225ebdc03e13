package nodes

import (
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/preheat/jobs"
)

func TestSelectTargets(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	live, dead := now.Add(time.Minute), now.Add(-time.Second)
	nodes := []Node{
		{Heartbeat: nodeapi.Heartbeat{ID: "a1", Address: "http://10.0.0.1:65002", Groups: []string{"zone-a"}}, ExpiresAt: live},
		{Heartbeat: nodeapi.Heartbeat{ID: "a2", Address: "http://10.0.0.2:65002", Groups: []string{"zone-a"}}, ExpiresAt: live},
		{Heartbeat: nodeapi.Heartbeat{ID: "a3", Address: "http://10.0.0.3:65002", Groups: []string{"zone-a"}}, ExpiresAt: dead},
		{Heartbeat: nodeapi.Heartbeat{ID: "b1", Address: "http://10.0.1.1:65002", Groups: []string{"zone-b", "gpu"}}, ExpiresAt: live},
		{Heartbeat: nodeapi.Heartbeat{ID: "solo", Address: "http://127.0.0.1:65002"}, ExpiresAt: live}, // no group, as in `shoal run`
	}
	ids := func(ts []jobs.Target) []string {
		out := []string{}
		for _, t := range ts {
			id := t.NodeID
			if t.Offline {
				id += "(off)"
			}
			out = append(out, id)
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		spec  TargetSpec
		want  []string
		empty []string
		unk   []string
	}{
		{name: "no groups is every node, grouped or not", spec: TargetSpec{}, want: []string{"a1", "a2", "a3(off)", "b1", "solo"}},
		{name: "groups", spec: TargetSpec{Groups: []string{"zone-a"}}, want: []string{"a1", "a2", "a3(off)"}},
		{name: "a group without nodes is reported", spec: TargetSpec{Groups: []string{"zone-b", "zone-c"}}, want: []string{"b1"}, empty: []string{"zone-c"}},
		{name: "node ids and IPs", spec: TargetSpec{Nodes: []string{"a2", "10.0.1.1", "127.0.0.1"}}, want: []string{"a2", "b1", "solo"}},
		{name: "unknown node", spec: TargetSpec{Nodes: []string{"a1", "zz"}}, want: []string{"a1"}, unk: []string{"zz"}},
		{name: "node outside the groups is unknown", spec: TargetSpec{Groups: []string{"zone-b"}, Nodes: []string{"a1"}}, want: []string{}, unk: []string{"a1"}},
		{name: "count picks live nodes", spec: TargetSpec{Groups: []string{"zone-a"}, Count: 5}, want: []string{"a1", "a2"}},
		{name: "percentage rounds up", spec: TargetSpec{Percentage: 50}, want: nil /* 2 of 4 live */},
		{name: "one per group, ungrouped nodes are a group", spec: TargetSpec{OnePerGroup: true}, want: []string{"a1", "b1", "solo"}},
		{name: "one per group skips dead nodes", spec: TargetSpec{Groups: []string{"zone-a"}, OnePerGroup: true, Nodes: []string{"a3", "a2"}}, want: []string{"a2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel := Select(append([]Node{}, nodes...), tc.spec, now)
			got := ids(sel.Targets)
			if tc.want == nil {
				if len(got) != 2 {
					t.Fatalf("got %v, want 2 live nodes", got)
				}
				for _, id := range got {
					if strings.Contains(id, "off") {
						t.Fatalf("picked offline node: %v", got)
					}
				}
			} else if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("targets %v, want %v", got, tc.want)
			}
			if !reflect.DeepEqual(sel.EmptyGroups, tc.empty) || !reflect.DeepEqual(sel.UnknownNodes, tc.unk) {
				t.Fatalf("empty %v unknown %v, want %v %v", sel.EmptyGroups, sel.UnknownNodes, tc.empty, tc.unk)
			}
		})
	}

	// A count picks the same nodes for one job (a resumed job), and spreads
	// across jobs.
	spec := TargetSpec{Count: 1, Seed: 7}
	first := ids(Select(append([]Node{}, nodes...), spec, now).Targets)
	if again := ids(Select(append([]Node{}, nodes...), spec, now).Targets); !reflect.DeepEqual(first, again) {
		t.Fatalf("count not stable for one seed: %v vs %v", first, again)
	}
	picked := map[string]bool{}
	for seed := int64(0); seed < 64; seed++ {
		spec.Seed = seed
		for _, id := range ids(Select(append([]Node{}, nodes...), spec, now).Targets) {
			picked[id] = true
		}
	}
	if len(picked) < 3 {
		t.Fatalf("count=1 over 64 jobs used only %v", picked)
	}
}
