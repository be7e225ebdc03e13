// Package grafana builds Shoal's Grafana dashboard (shoal.json) from Go with
// the Grafana Foundation SDK, so the file always matches Grafana's dashboard
// schema, and tests every query of it against a real Prometheus scraping a
// running Shoal. It is a module of its own so that the SDK stays out of the
// shoal binary's build.
//
// `go run ./gen` (make dashboard) writes shoal.json here and the copy the
// Helm chart ships as a ConfigMap for Grafana's dashboard sidecar.
package grafana

import (
	"encoding/json"
	"fmt"

	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/variants"
	"github.com/grafana/grafana-foundation-sdk/go/common"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/grafana/grafana-foundation-sdk/go/prometheus"
	"github.com/grafana/grafana-foundation-sdk/go/stat"
	"github.com/grafana/grafana-foundation-sdk/go/timeseries"
)

// UID is the dashboard's stable uid: links and provisioning refer to it.
const UID = "shoal-overview"

// JobAll is the value of the job variable's "All": every scrape job whose
// name mentions shoal, which is what the chart's ServiceMonitors produce
// (<release>-shoal-registry, …-tracker, …-preheat, …-agent-metrics).
const JobAll = ".*shoal.*"

// ds points every panel at the dashboard's datasource variable, so one
// import works against whichever Prometheus Grafana has.
var ds = common.DataSourceRef{Type: cog.ToPtr("prometheus"), Uid: cog.ToPtr("${datasource}")}

type query struct {
	expr, legend string
}

func q(expr, legend string) query { return query{expr, legend} }

func targets(qs []query) []cog.Builder[variants.Dataquery] {
	out := make([]cog.Builder[variants.Dataquery], 0, len(qs))
	for i, x := range qs {
		out = append(out, prometheus.NewDataqueryBuilder().
			Expr(x.expr).
			LegendFormat(x.legend).
			RefId(string(rune('A'+i))).
			Datasource(ds))
	}
	return out
}

func series(title, desc, unit string, w uint32, qs ...query) *timeseries.PanelBuilder {
	p := timeseries.NewPanelBuilder().
		Title(title).
		Description(desc).
		Datasource(ds).
		Unit(unit).
		Min(0).
		Height(8).
		Span(w).
		FillOpacity(10).
		Legend(common.NewVizLegendOptionsBuilder().
			DisplayMode(common.LegendDisplayModeList).
			Placement(common.LegendPlacementBottom).
			ShowLegend(true))
	for _, t := range targets(qs) {
		p.WithTarget(t)
	}
	return p
}

func single(title, desc, unit string, w uint32, qs ...query) *stat.PanelBuilder {
	p := stat.NewPanelBuilder().
		Title(title).
		Description(desc).
		Datasource(ds).
		Unit(unit).
		Height(4).
		Span(w).
		GraphMode(common.BigValueGraphModeNone).
		ColorMode(common.BigValueColorModeValue).
		ReduceOptions(common.NewReduceDataOptionsBuilder().Calcs([]string{"lastNotNull"}))
	for _, t := range targets(qs) {
		p.WithTarget(t)
	}
	return p
}

// Build returns the dashboard. Metric names are those of docs/metrics.md;
// the test evaluates every expression below on a real Prometheus.
func Build() (dashboard.Dashboard, error) {
	b := dashboard.NewDashboardBuilder("Shoal").
		Uid(UID).
		Description("P2P image distribution: where blob bytes come from, pull latency, cache, swarm, fallbacks, preheat and component health. Metrics: docs/metrics.md.").
		Tags([]string{"shoal", "registry", "p2p"}).
		Refresh("30s").
		Time("now-1h", "now").
		Timezone(common.TimeZoneBrowser).
		Tooltip(dashboard.DashboardCursorSyncCrosshair).
		WithVariable(dashboard.NewDatasourceVariableBuilder("datasource").
			Label("Data source").
			Type("prometheus")).
		WithVariable(dashboard.NewQueryVariableBuilder("job").
			Label("Job").
			Description("Scrape jobs of Shoal's components (the chart's ServiceMonitors name them <release>-shoal-<component>).").
			Datasource(ds).
			Query(dashboard.StringOrMap{String: cog.ToPtr("label_values(up, job)")}).
			Definition("label_values(up, job)").
			Regex(".*shoal.*").
			Refresh(dashboard.VariableRefreshOnTimeRangeChanged).
			Multi(true).
			IncludeAll(true).
			AllValue(JobAll).
			Current(dashboard.VariableOption{
				Text:  dashboard.StringOrArrayOfString{String: cog.ToPtr("All")},
				Value: dashboard.StringOrArrayOfString{String: cog.ToPtr("$__all")},
			}))

	// Traffic: what Shoal is for, registry egress against bytes the nodes
	// gave each other.
	b.WithRow(dashboard.NewRowBuilder("Traffic: registry egress vs between nodes"))
	b.WithPanel(series("Blob bytes by source",
		"Blob bytes the agents obtained, by where they came from: registry (its share of pieces and HTTP fallback), peer (other nodes), cache (served to clients from the node's cache).",
		"Bps", 12,
		q(`sum by (source) (rate(shoal_agent_blob_bytes_total[$__rate_interval]))`, "{{source}}")))
	b.WithPanel(series("Registry egress",
		"Blob bytes the registry sent: piece-range responses (by reader) and its seeder's uploads to peers.",
		"Bps", 12,
		q(`sum by (reader) (rate(shoal_registry_piece_bytes_total[$__rate_interval]))`, "pieces ({{reader}})"),
		q(`sum(rate(shoal_registry_seeder_uploaded_bytes_total[$__rate_interval]))`, "seeder")))
	b.WithPanel(single("Bytes from other nodes",
		"Share of downloaded blob bytes that came from other nodes rather than the registry, over the time range.",
		"percentunit", 6,
		q(`sum(increase(shoal_agent_blob_bytes_total{source="peer"}[$__range])) / sum(increase(shoal_agent_blob_bytes_total{source=~"peer|registry"}[$__range]))`, "from nodes")))
	b.WithPanel(single("Registry bytes",
		"Blob bytes the agents downloaded from the registry over the time range.",
		"bytes", 6,
		q(`sum(increase(shoal_agent_blob_bytes_total{source="registry"}[$__range]))`, "registry")))
	b.WithPanel(single("Bytes between nodes",
		"Blob bytes the agents downloaded from other nodes over the time range.",
		"bytes", 6,
		q(`sum(increase(shoal_agent_blob_bytes_total{source="peer"}[$__range]))`, "peer")))
	b.WithPanel(single("Uploaded to nodes",
		"Blob bytes agents sent to other nodes over the time range.",
		"bytes", 6,
		q(`sum(increase(shoal_agent_uploaded_bytes_total[$__range]))`, "uploaded")))
	b.WithPanel(series("Registry piece bytes by reason",
		"Piece bytes fetched from the registry on the swarm path: share (this node's share), alone (no other node connected), steal (idle node took an unclaimed piece), solo (swarm stalled).",
		"Bps", 12,
		q(`sum by (reason) (rate(shoal_agent_registry_piece_bytes_total[$__rate_interval]))`, "{{reason}}")))
	b.WithPanel(series("Uploaded to other nodes, per agent",
		"Blob bytes each agent sent to other nodes.",
		"Bps", 12,
		q(`sum by (instance) (rate(shoal_agent_uploaded_bytes_total[$__rate_interval]))`, "{{instance}}")))

	// Pulls: latency and the cache.
	b.WithRow(dashboard.NewRowBuilder("Pulls and cache"))
	b.WithPanel(series("Blob fetch latency",
		"Time an agent took to bring one blob into its cache (per node per blob, measured by preheat), quantiles.",
		"s", 12,
		q(`histogram_quantile(0.5, sum by (le) (rate(shoal_preheat_fetch_duration_seconds_bucket[$__rate_interval])))`, "p50"),
		q(`histogram_quantile(0.95, sum by (le) (rate(shoal_preheat_fetch_duration_seconds_bucket[$__rate_interval])))`, "p95"),
		q(`histogram_quantile(0.99, sum by (le) (rate(shoal_preheat_fetch_duration_seconds_bucket[$__rate_interval])))`, "p99")))
	b.WithPanel(series("Cache hit ratio",
		"Blob requests the agents served from their caches, over all blob requests.",
		"percentunit", 6,
		q(`sum(rate(shoal_agent_cache_hits_total[$__rate_interval])) / (sum(rate(shoal_agent_cache_hits_total[$__rate_interval])) + sum(rate(shoal_agent_cache_misses_total[$__rate_interval])))`, "hit ratio")))
	b.WithPanel(single("Cache hit ratio (range)",
		"Cache hits over all blob requests, over the time range.",
		"percentunit", 6,
		q(`sum(increase(shoal_agent_cache_hits_total[$__range])) / (sum(increase(shoal_agent_cache_hits_total[$__range])) + sum(increase(shoal_agent_cache_misses_total[$__range])))`, "hit ratio")))
	b.WithPanel(series("Mirror requests",
		"Requests containerd sent to the agents' mirrors, by kind.",
		"reqps", 8,
		q(`sum by (kind) (rate(shoal_agent_mirror_requests_total[$__rate_interval]))`, "{{kind}}")))
	b.WithPanel(series("Downloads and evictions",
		"Blob downloads started (one per blob however many requesters join) and blobs evicted from the caches.",
		"ops", 8,
		q(`sum(rate(shoal_agent_blob_downloads_total[$__rate_interval]))`, "downloads"),
		q(`sum(rate(shoal_agent_cache_evictions_total[$__rate_interval]))`, "evictions")))
	b.WithPanel(series("Cache used",
		"Cache bytes in use per agent, reservations of downloads under way included.",
		"bytes", 8,
		q(`sum by (instance) (shoal_agent_cache_used_bytes)`, "{{instance}}")))

	// Swarm health.
	b.WithRow(dashboard.NewRowBuilder("Swarm health"))
	b.WithPanel(series("Torrents",
		"Torrents each agent downloads or seeds, and torrents the registry's seeder serves.",
		"short", 8,
		q(`sum by (instance) (shoal_agent_active_torrents)`, "agent {{instance}}"),
		q(`sum(shoal_registry_seeding_torrents)`, "registry seeder")))
	b.WithPanel(series("Swarm size",
		"Peers in the swarm announced to, and peers the tracker handed out, per announce (median).",
		"short", 8,
		q(`histogram_quantile(0.5, sum by (le) (rate(shoal_tracker_swarm_peers_bucket[$__rate_interval])))`, "swarm peers p50"),
		q(`histogram_quantile(0.5, sum by (le) (rate(shoal_tracker_returned_peers_bucket[$__rate_interval])))`, "returned peers p50")))
	b.WithPanel(series("Announces",
		"Announces the tracker accepted, by event, and tracker failures by reason.",
		"reqps", 8,
		q(`sum by (event) (rate(shoal_tracker_announces_total[$__rate_interval]))`, "{{event}}"),
		q(`sum by (reason) (rate(shoal_tracker_failures_total[$__rate_interval]))`, "failure {{reason}}")))
	b.WithPanel(series("Swarm data: useful vs wasted",
		"Piece bytes received from other nodes that passed their check, and those that did not or were duplicates.",
		"Bps", 8,
		q(`sum(rate(shoal_agent_swarm_received_bytes_total{kind="useful"}[$__rate_interval]))`, "useful"),
		q(`sum(rate(shoal_agent_swarm_received_bytes_total{kind="all"}[$__rate_interval])) - sum(rate(shoal_agent_swarm_received_bytes_total{kind="useful"}[$__rate_interval]))`, "wasted")))
	b.WithPanel(series("Tracker latency",
		"Announce handling time and peer store round trips (p95).",
		"s", 8,
		q(`histogram_quantile(0.95, sum by (le) (rate(shoal_tracker_announce_seconds_bucket[$__rate_interval])))`, "announce p95"),
		q(`histogram_quantile(0.95, sum by (le, op) (rate(shoal_tracker_store_seconds_bucket[$__rate_interval])))`, "store {{op}} p95")))
	b.WithPanel(series("Rejected and invalid requests",
		"Tracker tokens rejected by reason, registry torrent requests that were not ok, and digest mismatches the agents discarded.",
		"ops", 8,
		q(`sum by (reason) (rate(shoal_tracker_rejected_tokens_total[$__rate_interval]))`, "tracker token {{reason}}"),
		q(`sum by (result) (rate(shoal_registry_torrent_requests_total{result!="ok"}[$__rate_interval]))`, "torrent request {{result}}"),
		q(`sum(rate(shoal_agent_digest_mismatches_total[$__rate_interval]))`, "digest mismatches")))

	// Fallbacks off the swarm path.
	b.WithRow(dashboard.NewRowBuilder("Fallbacks"))
	b.WithPanel(series("Fallbacks by reason",
		"Downloads that left the swarm path: solo (every missing piece from the registry), stall, deadline (plain HTTP), no_torrent (upstream without torrents), bad_torrent, idle_peer, bad_peer_data.",
		"short", 16,
		q(`sum by (reason) (increase(shoal_agent_fallbacks_total[$__rate_interval]))`, "{{reason}}")))
	b.WithPanel(single("Fallbacks (range)",
		"Downloads that left the swarm path over the time range.",
		"short", 8,
		q(`sum(increase(shoal_agent_fallbacks_total[$__range]))`, "fallbacks")))

	// Preheat.
	b.WithRow(dashboard.NewRowBuilder("Preheat"))
	b.WithPanel(series("Jobs by state",
		"Stored preheat jobs by state (every replica reports the store's view).",
		"short", 8,
		q(`max by (state) (shoal_preheat_jobs)`, "{{state}}")))
	b.WithPanel(series("Jobs created and finished",
		"Jobs created by trigger and finished by final state.",
		"short", 8,
		q(`sum by (trigger) (increase(shoal_preheat_jobs_created_total[$__rate_interval]))`, "created {{trigger}}"),
		q(`sum by (state) (increase(shoal_preheat_jobs_finished_total[$__rate_interval]))`, "finished {{state}}")))
	b.WithPanel(series("Preheat bytes and fetches",
		"Bytes agents pulled into their caches for preheat jobs, by source, and per node per blob fetches by result.",
		"Bps", 8,
		q(`sum by (source) (rate(shoal_preheat_bytes_total[$__rate_interval]))`, "{{source}}"),
		q(`sum by (result) (rate(shoal_preheat_blob_fetches_total[$__rate_interval]))`, "fetches {{result}}")))
	b.WithPanel(series("Job duration",
		"Time from a job's start to its final state.",
		"s", 12,
		q(`histogram_quantile(0.5, sum by (le) (rate(shoal_preheat_job_duration_seconds_bucket[$__rate_interval])))`, "p50"),
		q(`histogram_quantile(0.95, sum by (le) (rate(shoal_preheat_job_duration_seconds_bucket[$__rate_interval])))`, "p95")))
	b.WithPanel(single("Jobs succeeded (range)",
		"Jobs that ended in SUCCESS over the time range.",
		"short", 12,
		q(`sum(increase(shoal_preheat_jobs_finished_total{state="SUCCESS"}[$__range]))`, "succeeded")))

	// Component health.
	b.WithRow(dashboard.NewRowBuilder("Component health"))
	b.WithPanel(single("Targets up",
		"Scrape targets answering, per job (component).",
		"short", 12,
		q(`sum by (job) (up{job=~"$job"})`, "{{job}}")))
	b.WithPanel(single("Tracker peer store",
		"1 if the tracker's last peer store operation succeeded.",
		"short", 6,
		q(`min by (store) (shoal_tracker_store_up)`, "{{store}}")))
	b.WithPanel(single("Agents reporting",
		"Agents Prometheus scrapes (one per node).",
		"short", 6,
		q(`count(shoal_agent_active_torrents)`, "agents")))
	b.WithPanel(series("Memory",
		"Resident memory per process.",
		"bytes", 12,
		q(`sum by (job, instance) (process_resident_memory_bytes{job=~"$job"})`, "{{job}} {{instance}}")))
	b.WithPanel(series("CPU",
		"CPU per process.",
		"percentunit", 12,
		q(`sum by (job, instance) (rate(process_cpu_seconds_total{job=~"$job"}[$__rate_interval]))`, "{{job}} {{instance}}")))

	d, err := b.Build()
	if err != nil {
		return d, err
	}
	// Grafana keys panel state (links, edits, repeats) by id: number them
	// in layout order so the ids stay put when panels are appended.
	for i, p := range d.Panels {
		id := uint32(i + 1)
		switch {
		case p.Panel != nil:
			p.Panel.Id = &id
		case p.RowPanel != nil:
			p.RowPanel.Id = id
		}
	}
	return d, nil
}

// JSON is shoal.json: the dashboard indented, with a trailing newline.
func JSON() ([]byte, error) {
	d, err := Build()
	if err != nil {
		return nil, fmt.Errorf("building the dashboard: %w", err)
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding the dashboard: %w", err)
	}
	return append(out, '\n'), nil
}

// Files are where the dashboard is kept, relative to deploy/grafana: the
// file to import by hand and the copy inside the chart (Helm reads only
// files under the chart's directory).
var Files = []string{"shoal.json", "../helm/shoal/dashboards/shoal.json"}
