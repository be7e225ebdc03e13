// Command loadgen measures tracker announce throughput and latency from a
// separate process, over loopback HTTP, against one or more running
// trackers (e.g. one per peer store), and writes the results side by side
// as JSON and Markdown.
//
//	loadgen -secret S -target memory=http://127.0.0.1:6969 -target redis=http://127.0.0.1:6970 -out bench/results
package main

import (
	"bytes"
	"context"
	"crypto/sha1"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/token"
)

type targets []string

func (t *targets) String() string     { return strings.Join(*t, ",") }
func (t *targets) Set(v string) error { *t = append(*t, v); return nil }

// Result is one target's figures.
type Result struct {
	Store     string  `json:"store"`
	URL       string  `json:"url"`
	Requests  int64   `json:"requests"`
	Errors    int64   `json:"errors"`
	Seconds   float64 `json:"seconds"`
	PerSecond float64 `json:"announces_per_second"`
	P50ms     float64 `json:"p50_ms"`
	P90ms     float64 `json:"p90_ms"`
	P99ms     float64 `json:"p99_ms"`
	MaxMs     float64 `json:"max_ms"`
	// LoadAvg is the 1-minute load average when the target finished: the
	// machine is shared, so figures are only comparable at similar load.
	LoadAvg      string  `json:"loadavg_1m"`
	AvgPeersBack float64 `json:"avg_peers_returned"`
}

// Report is the whole run.
type Report struct {
	Date        string   `json:"date"`
	Host        string   `json:"host"`
	CPUs        int      `json:"cpus"`
	InfoHashes  int      `json:"infohashes"`
	Peers       int      `json:"peers_per_infohash"`
	Numwant     int      `json:"numwant"`
	Concurrency int      `json:"concurrency"`
	Results     []Result `json:"results"`
}

func main() {
	var tg targets
	secret := flag.String("secret", "", "tracker secret, to sign announce tokens")
	nIH := flag.Int("infohashes", 10000, "distinct infohashes")
	nPeers := flag.Int("peers", 100, "peers per infohash")
	numwant := flag.Int("numwant", 50, "numwant sent with each announce")
	conc := flag.Int("concurrency", 16, "concurrent keep-alive connections")
	maxDur := flag.Duration("max-duration", 3*time.Minute, "stop a target early after this long")
	out := flag.String("out", "bench/results", "directory for tracker.json and tracker.md")
	flag.Var(&tg, "target", "name=base URL of a running tracker (repeatable)")
	flag.Parse()
	if *secret == "" || len(tg) == 0 {
		logrus.Fatal("loadgen: -secret and at least one -target are required")
	}
	keys, err := token.NewKeys(*secret)
	if err != nil {
		logrus.WithError(err).Fatal("loadgen")
	}
	// Pre-build every per-infohash and per-peer query fragment so the load
	// generator spends its CPU on requests, not on encoding.
	ihPart := make([]string, *nIH)
	exp := time.Now().Add(24 * time.Hour)
	for i := range ihPart {
		var seed [8]byte
		binary.BigEndian.PutUint64(seed[:], uint64(i))
		h := sha1.Sum(seed[:])
		ihPart[i] = "token=" + url.QueryEscape(keys.Sign("announce", h[:], exp)) + "&info_hash=" + url.QueryEscape(string(h[:]))
	}
	peerPart := make([]string, *nPeers)
	for p := range peerPart {
		left := "1048576"
		if p%10 == 0 {
			left = "0"
		}
		peerPart[p] = fmt.Sprintf("&peer_id=%s&port=%d&left=%s&numwant=%d&compact=1&event=started",
			url.QueryEscape(fmt.Sprintf("-LG0001-%012d", p)), 10000+p, left, *numwant)
	}
	host, _ := os.Hostname()
	rep := Report{Date: time.Now().UTC().Format(time.RFC3339), Host: host, CPUs: runtime.NumCPU(),
		InfoHashes: *nIH, Peers: *nPeers, Numwant: *numwant, Concurrency: *conc}
	for _, t := range tg {
		name, base, ok := strings.Cut(t, "=")
		if !ok {
			logrus.Fatalf("loadgen: target %q: want name=url", t)
		}
		r := run(name, strings.TrimRight(base, "/"), ihPart, peerPart, *conc, *maxDur)
		logrus.WithFields(logrus.Fields{"store": name, "req": r.Requests, "errors": r.Errors,
			"per_s": int(r.PerSecond), "p50_ms": r.P50ms, "p99_ms": r.P99ms}).Info("target done")
		rep.Results = append(rep.Results, r)
	}
	if err := write(*out, rep); err != nil {
		logrus.WithError(err).Fatal("loadgen: write results")
	}
}

// run announces every (infohash, peer) pair once, peer-major so all swarms
// grow together, and reports throughput and latency.
func run(name, base string, ihPart, peerPart []string, conc int, maxDur time.Duration) Result {
	tr := &http.Transport{MaxIdleConns: conc, MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc, DisableCompression: true}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	total := int64(len(ihPart) * len(peerPart))
	var next, errs, peersBack atomic.Int64
	ctx, cancel := context.WithTimeout(context.Background(), maxDur)
	defer cancel()
	lat := make([][]time.Duration, conc)
	var wg sync.WaitGroup
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			var buf bytes.Buffer
			for ctx.Err() == nil {
				n := next.Add(1) - 1
				if n >= total {
					return
				}
				p, i := int(n)/len(ihPart), int(n)%len(ihPart)
				t0 := time.Now()
				resp, err := hc.Get(base + "/announce?" + ihPart[i] + peerPart[p])
				if err != nil {
					errs.Add(1)
					continue
				}
				buf.Reset()
				_, err = buf.ReadFrom(resp.Body)
				resp.Body.Close()
				lat[w] = append(lat[w], time.Since(t0))
				body := buf.String()
				if err != nil || resp.StatusCode != 200 || strings.Contains(body, "failure reason") {
					errs.Add(1)
					continue
				}
				// Compact IPv4 peers: "5:peers<len>:" then 6 bytes each.
				if k := strings.Index(body, "5:peers"); k >= 0 {
					rest := body[k+7:]
					if c := strings.IndexByte(rest, ':'); c > 0 {
						if l, err := strconv.Atoi(rest[:c]); err == nil {
							peersBack.Add(int64(l / 6))
						}
					}
				}
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(q float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[int(q*float64(len(all)-1))].Microseconds()) / 1000
	}
	r := Result{Store: name, URL: base, Requests: int64(len(all)), Errors: errs.Load(), Seconds: elapsed.Seconds(),
		P50ms: pct(.50), P90ms: pct(.90), P99ms: pct(.99), MaxMs: pct(1)}
	r.PerSecond = float64(r.Requests) / r.Seconds
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		r.LoadAvg, _, _ = strings.Cut(string(b), " ")
	}
	if ok := r.Requests - r.Errors; ok > 0 {
		r.AvgPeersBack = float64(peersBack.Load()) / float64(ok)
	}
	return r
}

func write(dir string, rep Report) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	j, _ := json.MarshalIndent(rep, "", "  ")
	if err := os.WriteFile(filepath.Join(dir, "tracker.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "# Tracker announce benchmark\n\n%s on %s (%d CPUs), load generator in a separate process over loopback HTTP.\n",
		rep.Date, rep.Host, rep.CPUs)
	fmt.Fprintf(&b, "%d infohashes x %d peers, each pair announced once (event=started, numwant=%d), %d keep-alive connections. The tracker and the load generator share the machine's CPUs.\n\n",
		rep.InfoHashes, rep.Peers, rep.Numwant, rep.Concurrency)
	b.WriteString("| store | announces | errors | seconds | announces/s | p50 ms | p90 ms | p99 ms | max ms | avg peers returned | load avg (1m) |\n")
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, r := range rep.Results {
		fmt.Fprintf(&b, "| %s | %d | %d | %.1f | %.0f | %.2f | %.2f | %.2f | %.1f | %.1f | %s |\n",
			r.Store, r.Requests, r.Errors, r.Seconds, r.PerSecond, r.P50ms, r.P90ms, r.P99ms, r.MaxMs, r.AvgPeersBack, r.LoadAvg)
	}
	return os.WriteFile(filepath.Join(dir, "tracker.md"), []byte(b.String()), 0o644)
}
