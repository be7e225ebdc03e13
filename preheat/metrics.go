package preheat

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoalproject/shoal/internal/nodeapi"
)

// metricSet is a replica's metrics, on its own registry so that several
// replicas can live in one process.
type metricSet struct {
	process  prometheus.Gatherer
	reg      *prometheus.Registry
	created  *prometheus.CounterVec
	done     *prometheus.CounterVec
	fetches  *prometheus.CounterVec
	bytes    *prometheus.CounterVec
	jobDur   prometheus.Histogram
	fetchDur prometheus.Histogram
}

// jobsCollector reports jobs by state as stored, i.e. as every replica
// sees them, not only the ones this replica ran.
type jobsCollector struct {
	store Store
	desc  *prometheus.Desc
}

func (c *jobsCollector) Describe(ch chan<- *prometheus.Desc) { ch <- c.desc }

func (c *jobsCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	jobs, err := c.store.ListJobs(ctx, 10000)
	if err != nil {
		ch <- prometheus.NewInvalidMetric(c.desc, err)
		return
	}
	counts := map[JobState]int{StatePending: 0, StateRunning: 0, StateSuccess: 0, StateFailure: 0, StateCanceled: 0}
	for _, j := range jobs {
		counts[j.State]++
	}
	for st, n := range counts {
		ch <- prometheus.MustNewConstMetric(c.desc, prometheus.GaugeValue, float64(n), string(st))
	}
}

// newMetrics registers the replica's metrics; process, when not nil, are
// the process's Go and process collectors, served next to them.
func newMetrics(st Store, process prometheus.Gatherer) *metricSet {
	m := &metricSet{
		reg:     prometheus.NewRegistry(),
		process: process,
		created: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_preheat_jobs_created_total", Help: "Preheat jobs created by this replica, by trigger.",
		}, []string{"trigger"}),
		done: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_preheat_jobs_finished_total", Help: "Preheat jobs finished by this replica, by final state.",
		}, []string{"state"}),
		fetches: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_preheat_blob_fetches_total", Help: "Per node per blob fetch requests to agents, by result.",
		}, []string{"result"}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_preheat_bytes_total", Help: "Bytes preheated into agent caches, by where the agent got them (peer, registry).",
		}, []string{"source"}),
		jobDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shoal_preheat_job_duration_seconds", Help: "Wall time from job start to its final state.",
			Buckets: prometheus.ExponentialBuckets(0.1, 2, 16),
		}),
		fetchDur: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shoal_preheat_fetch_duration_seconds", Help: "Time an agent took to cache one blob.",
			Buckets: prometheus.ExponentialBuckets(0.01, 2, 16),
		}),
	}
	m.reg.MustRegister(m.created, m.done, m.fetches, m.bytes, m.jobDur, m.fetchDur,
		&jobsCollector{store: st, desc: prometheus.NewDesc("shoal_preheat_jobs", "Stored preheat jobs by state.", []string{"state"}, nil)})
	return m
}

// Fetched counts one blob fetch (runner.Observer): resp nil when it failed.
func (m *metricSet) Fetched(resp *nodeapi.FetchResponse, took time.Duration) {
	if resp == nil {
		m.fetches.WithLabelValues("failure").Inc()
		return
	}
	m.fetches.WithLabelValues("success").Inc()
	m.bytes.WithLabelValues("peer").Add(float64(resp.BytesFromPeers))
	m.bytes.WithLabelValues("registry").Add(float64(resp.BytesFromRegistry))
	m.fetchDur.Observe(took.Seconds())
}

// JobFinished counts a job this replica moved to a final state
// (runner.Observer).
func (m *metricSet) JobFinished(j *Job) {
	m.done.WithLabelValues(string(j.State)).Inc()
	start := j.StartedAt
	if start.IsZero() {
		start = j.CreatedAt
	}
	if !j.FinishedAt.IsZero() {
		m.jobDur.Observe(j.FinishedAt.Sub(start).Seconds())
	}
}
