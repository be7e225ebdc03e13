package preheat

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/shoalproject/shoal/preheat/nodes"
)

// TargetSpec and Selection are nodes' (nodes.Select): the spec's checks
// answer the API's errors, so they stay here.
type (
	TargetSpec = nodes.TargetSpec
	Selection  = nodes.Selection
)

// maxTargetNodes bounds the node list a request may name; larger lists
// are groups.
const maxTargetNodes = 1000

// validateSpec checks the spec before anything is resolved or stored.
func validateSpec(ts TargetSpec) error {
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
