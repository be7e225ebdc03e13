package e2e

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// Run is the outcome of one rollout: every node pulling one image at once.
// tools/e2eplot draws the charts from the JSON of these; it reads scenario,
// mode, nodes, imageBytes, rateMbit, delayMs, max and tStar by name and
// refuses a results file without them.
type Run struct {
	Scenario   string    `json:"scenario"` // cold, fault-tracker-killed, ...
	Mode       string    `json:"mode"`     // p2p (through agents) or direct (from the registry)
	N          int       `json:"nodes"`
	ImageBytes int64     `json:"imageBytes"`
	RateMbit   int       `json:"rateMbit"`
	DelayMs    int64     `json:"delayMs"`
	Seconds    []float64 `json:"seconds"` // per node completion time
	P50        float64   `json:"p50"`
	P95        float64   `json:"p95"`
	Max        float64   `json:"max"`
	// RegistryEgress is what left the registry host's veth (IP+TCP headers
	// and tracker replies included).
	RegistryEgress int64   `json:"registryEgressBytes"`
	EgressRatio    float64 `json:"registryEgressPerImage"`
	// SwarmBytes / AgentRegistryBytes: blob bytes the agents got over
	// BitTorrent (from other agents and the registry's seeder) / over HTTP
	// from the registry (shoal_agent_blob_bytes_total). PeerBytes: bytes
	// agents uploaded to each other (shoal_agent_uploaded_bytes_total), i.e. the
	// node-to-node share of SwarmBytes.
	SwarmBytes         int64 `json:"swarmBytes"`
	PeerBytes          int64 `json:"peerToPeerBytes"`
	AgentRegistryBytes int64 `json:"agentRegistryBytes"`
	// WastedBytes: piece bytes agents received from other nodes and threw
	// away as duplicates (shoal_agent_swarm_received_bytes_total).
	WastedBytes int64 `json:"wastedBytes"`
	// Fallbacks counts the downloads that left the swarm path, by reason
	// (shoal_agent_fallbacks_total), and RegistryPieces the piece bytes
	// fetched from the registry on it, by reason
	// (shoal_agent_registry_piece_bytes_total).
	Fallbacks      map[string]int64 `json:"fallbacks,omitempty"`
	RegistryPieces map[string]int64 `json:"registryPieceBytes,omitempty"`
	// DataAnswers counts the agents' data-path answers to each other
	// (served, busy, refused: shoal_agent_data_answers_total) and
	// DataConnections the connections they accepted, each a mutual-TLS
	// handshake (tools/sim reports busy answers per node too).
	DataAnswers     map[string]int64 `json:"dataAnswers,omitempty"`
	DataConnections int64            `json:"dataConnections,omitempty"`
	TStar           float64          `json:"tStar"`
	VsTStar         float64          `json:"maxOverTStar"`
	VsDirect        float64          `json:"maxOverDirect,omitempty"` // p2p runs: max / direct max of the same cell
	Note            string           `json:"note,omitempty"`
}

// tStar is the Kumar & Ross lower bound for distributing F bytes to n nodes
// with server uplink us and node up/down links u, d (bytes/s).
func tStar(f float64, n int, us, u, d float64) float64 {
	return math.Max(math.Max(f/us, f/d), float64(n)*f/(us+float64(n)*u))
}

func percentile(xs []float64, p float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	i := int(math.Ceil(p*float64(len(s)))) - 1
	return s[max(0, min(i, len(s)-1))]
}

func (r *Run) finish() {
	r.P50, r.P95, r.Max = percentile(r.Seconds, .5), percentile(r.Seconds, .95), percentile(r.Seconds, 1)
	r.EgressRatio = float64(r.RegistryEgress) / float64(r.ImageBytes)
	bps := float64(r.RateMbit) * 1e6 / 8
	r.TStar = tStar(float64(r.ImageBytes), r.N, bps, bps, bps)
	if r.TStar > 0 {
		r.VsTStar = r.Max / r.TStar
	}
}

// predictedDirect is the direct-pull cell of p2p's cell computed instead of
// run: every node's copy crosses the registry's uplink, so the last node
// finishes after N·F/u_s.
func predictedDirect(p2p Run) Run {
	r := Run{Scenario: p2p.Scenario, Mode: "direct", N: p2p.N, ImageBytes: p2p.ImageBytes, RateMbit: p2p.RateMbit, DelayMs: p2p.DelayMs,
		RegistryEgress: int64(p2p.N) * p2p.ImageBytes, Note: "predicted N·F/u_s (link-bound), not run"}
	r.finish()
	r.Max = float64(r.N) * float64(r.ImageBytes) / (float64(r.RateMbit) * 1e6 / 8)
	r.P50, r.P95 = r.Max, r.Max
	if r.TStar > 0 {
		r.VsTStar = r.Max / r.TStar
	}
	return r
}

// linkVsDirect fills VsDirect of p2p runs from the direct run of the same
// scenario, N, size and link.
func linkVsDirect(runs []Run) {
	for i := range runs {
		if runs[i].Mode != "p2p" {
			continue
		}
		for _, d := range runs {
			if d.Mode == "direct" && d.Scenario == runs[i].Scenario && d.N == runs[i].N &&
				d.ImageBytes == runs[i].ImageBytes && d.RateMbit == runs[i].RateMbit && d.DelayMs == runs[i].DelayMs && d.Max > 0 {
				runs[i].VsDirect = runs[i].Max / d.Max
			}
		}
	}
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

func markdown(title string, runs []Run) string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n", title)
	b.WriteString("| scenario | mode | N | image | link | p50 s | p95 s | max s | T* s | max/T* | max/direct | registry egress | egress/image | swarm bytes | wasted | node-to-node bytes | agent HTTP bytes | note |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range runs {
		link := fmt.Sprintf("%d Mbit/s", r.RateMbit)
		if r.DelayMs > 0 {
			link += fmt.Sprintf(" +%d ms", r.DelayMs)
		}
		vd := "–"
		if r.VsDirect > 0 {
			vd = fmt.Sprintf("%.2f", r.VsDirect)
		}
		fmt.Fprintf(&b, "| %s | %s | %d | %s | %s | %.2f | %.2f | %.2f | %.2f | %.2f | %s | %s | %.2f× | %s | %s | %s | %s | %s |\n",
			r.Scenario, r.Mode, r.N, mib(r.ImageBytes), link, r.P50, r.P95, r.Max, r.TStar, r.VsTStar, vd,
			mib(r.RegistryEgress), r.EgressRatio, mib(r.SwarmBytes), mib(r.WastedBytes), mib(r.PeerBytes), mib(r.AgentRegistryBytes), r.Note)
	}
	b.WriteString("\nTimes are per-node completion of a full pull (manifest, config, every layer, sha256 verified). ")
	b.WriteString("Registry egress is the registry host's veth tx bytes (headers and tracker replies included). ")
	b.WriteString("T* = max(F/u_s, F/d, N·F/(u_s+N·u)) (Kumar & Ross 2006). Swarm bytes: what agents received from other nodes (over the HTTP data path), and the bytes among them thrown away (failed checks); agent HTTP bytes: what agents fetched from the registry over HTTP (their share of pieces, web seed, fallback); node-to-node: what agents uploaded to each other.\n")
	return b.String()
}

// writeReport writes results/<name>.json and .md. The charts drawn from the
// JSON are tools/e2eplot's (a module of its own, so that the plotting
// library stays out of this one); the Makefile's e2e targets run it.
func writeReport(name, title string, runs []Run) ([]string, error) {
	// make test points this elsewhere: its runs share the machine with the
	// other packages' tests and are a gate, not the published numbers.
	dir := os.Getenv("SHOAL_E2E_RESULTS")
	if dir == "" {
		dir = "results"
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	js, err := json.MarshalIndent(runs, "", "  ")
	if err != nil {
		return nil, err
	}
	files := []string{filepath.Join(dir, name+".json"), filepath.Join(dir, name+".md")}
	if err := os.WriteFile(files[0], append(js, '\n'), 0o644); err != nil {
		return nil, err
	}
	if err := os.WriteFile(files[1], []byte(markdown(title, runs)), 0o644); err != nil {
		return nil, err
	}
	return files, nil
}
