// Package regshare is the contract between an agent fetching its share of
// a blob from the registry and the registry's piece endpoint: the agent
// marks a share fetch with Header, and the registry refuses it with
// StatusTaken when another node fetched that range a moment ago.
//
// Why: a node's share of the registry's pieces is computed over the
// nodes it is connected to. While a rollout's swarm forms (on a busy host
// at N = 64 and beyond, for seconds) nodes see different subsets, blocks
// get several owners, and the registry sends them several times (issue
// 20). Only the registry sees every share fetch, so it is where a second
// owner learns that the block is on its way through the swarm already.
// A node's steals (a piece nobody in its neighbourhood fetches) carry it
// too: in a big swarm a neighbourhood idles while others fetch that piece.
// Fetches of a stalled node (solo) and plain pulls never carry Header:
// they are always served, so the refusal cannot hold a node back for
// longer than the stall rule allows.
package regshare

import (
	"net/http"
	"time"
)

// Header marks a piece-range request as a node's share of a swarm's
// registry pieces; its value is ignored.
const Header = "Shoal-Share"

// StatusTaken is the registry's answer to a share fetch of a range another
// node fetched within Hold.
const StatusTaken = http.StatusConflict

// Hold is how long a range fetched by one node is refused to others'
// share fetches, and how long a refused node leaves it to the swarm: long
// enough for a piece to cross a swarm of hundreds of nodes on slow links
// (a few relay hops of a piece each), as long as an agent's claims hold.
const Hold = 30 * time.Second
