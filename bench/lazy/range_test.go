package lazy

import (
	"context"
	crand "crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// TestRangeBenchmark runs only when SHOAL_BENCH_OUT names a directory
// (`make bench`, `make bench-range`). SHOAL_BENCH_RANGE_MIB is the blob's
// size (default 1024), SHOAL_BENCH_RANGES the number of random 1 MiB
// ranges (default 200), SHOAL_BENCH_RANGE_COLD the cold trials (default 10).
func TestRangeBenchmark(t *testing.T) {
	out := os.Getenv("SHOAL_BENCH_OUT")
	if out == "" {
		t.Skip("benchmark: run through `make bench` or `make bench-range` (SHOAL_BENCH_OUT unset)")
	}
	sizeMiB := envInt("SHOAL_BENCH_RANGE_MIB", 1024)
	nRanges := envInt("SHOAL_BENCH_RANGES", 200)
	coldTrials := envInt("SHOAL_BENCH_RANGE_COLD", 10)
	const rangeLen = 1 << 20
	e := startEnv(t, 0)
	res := rangeResult{Date: time.Now().UTC().Format(time.RFC3339), BlobMiB: sizeMiB, Ranges: nRanges, RangeBytes: rangeLen, PieceBytes: 1 << 20, Load: loadavg()}

	// The blob: random bytes in a file (to check every answer), pushed.
	path := filepath.Join(t.TempDir(), "blob")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	var seed [32]byte
	crand.Read(seed[:])
	if _, err := io.Copy(f, io.LimitReader(rand.NewChaCha8(seed), int64(sizeMiB)<<20)); err != nil {
		t.Fatal(err)
	}
	f.Seek(0, 0)
	start := time.Now()
	b := e.upload(f)
	t.Logf("pushed %s (%d MiB) in %s", b.digest, sizeMiB, time.Since(start).Round(time.Millisecond))
	want := func(off int64) []byte {
		buf := make([]byte, rangeLen)
		f.ReadAt(buf, off)
		return buf
	}
	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	offsets := make([]int64, nRanges)
	for i := range offsets {
		offsets[i] = rng.Int64N(b.size - rangeLen + 1)
	}
	ctx := context.Background()
	fresh := func() *http.Client { return &http.Client{Transport: &http.Transport{DisableCompression: true}} }

	// Cold: nobody has the blob. The first range of it through a fresh
	// agent against a direct Range request to the registry for the same
	// bytes, in turns. The agent first pulls a small blob of its own, as a
	// node's agent that has been running does: what is measured is a blob
	// nobody has, not a process's first request.
	crand.Read(seed[:])
	warm := e.upload(io.LimitReader(rand.NewChaCha8(seed), 1<<20))
	for k := range coldTrials {
		a := e.startAgent("", 4<<30)
		if _, err := readRange(ctx, fresh(), a.mirror, warm, 0, warm.size, nil); err != nil {
			t.Fatalf("warm-up pull: %v", err)
		}
		off := offsets[k%len(offsets)]
		var direct, via rangeTimes
		var err1, err2 error
		if k%2 == 0 {
			direct, err1 = readRange(ctx, fresh(), e.regAddr, b, off, rangeLen, want(off))
			via, err2 = readRange(ctx, fresh(), a.mirror, b, off, rangeLen, want(off))
		} else {
			via, err2 = readRange(ctx, fresh(), a.mirror, b, off, rangeLen, want(off))
			direct, err1 = readRange(ctx, fresh(), e.regAddr, b, off, rangeLen, want(off))
		}
		if err1 != nil || err2 != nil {
			t.Fatalf("cold trial %d: direct %v, agent %v", k, err1, err2)
		}
		res.Cold.Direct = append(res.Cold.Direct, ms(direct.last))
		res.Cold.Agent = append(res.Cold.Agent, ms(via.last))
		res.Cold.Ratio = append(res.Cold.Ratio, round3(float64(via.last)/float64(direct.last)))
		a.p.Stop()
	}
	res.Cold.summarize()
	t.Logf("cold first range: agent p50 %.1f ms, direct p50 %.1f ms, ratio p50 %.2f p99 %.2f", pct(res.Cold.Agent, 50), pct(res.Cold.Direct, 50), pct(res.Cold.Ratio, 50), pct(res.Cold.Ratio, 99))

	// Peer: one agent has the whole blob; a fresh one reads the ranges, one
	// after the other on one connection, while it completes the blob in
	// the background. Direct reads of the same ranges interleave.
	seedA := e.startAgent("", 4<<30)
	if _, err := readRange(ctx, fresh(), seedA.mirror, b, 0, b.size, nil); err != nil {
		t.Fatalf("seed agent pull: %v", err)
	}
	waitCached(t, seedA, b)
	q := e.startAgent("", 4<<30)
	cq, cd := fresh(), fresh()
	for _, off := range offsets {
		via, err := readRange(ctx, cq, q.mirror, b, off, rangeLen, want(off))
		if err != nil {
			t.Fatal(err)
		}
		direct, err := readRange(ctx, cd, e.regAddr, b, off, rangeLen, want(off))
		if err != nil {
			t.Fatal(err)
		}
		res.Peer.FirstByte = append(res.Peer.FirstByte, ms(via.first))
		res.Peer.LastByte = append(res.Peer.LastByte, ms(via.last))
		res.Peer.DirectFirstByte = append(res.Peer.DirectFirstByte, ms(direct.first))
		res.Peer.DirectLastByte = append(res.Peer.DirectLastByte, ms(direct.last))
	}
	res.Peer.Early = scrape(q.mirror, `shoal_agent_range_responses_total{kind="early"}`)
	res.Peer.CacheHits = scrape(q.mirror, `shoal_agent_cache_hits_total`)
	res.Peer.RegistryBytes = scrape(q.mirror, `shoal_agent_registry_piece_bytes_total`)
	res.Peer.summarize()
	t.Logf("peer: first byte p50 %.2f p99 %.2f ms (direct p99 %.2f); last byte p50 %.2f p99 %.2f ms; %v early, %v cached",
		res.Peer.FirstByteP50, res.Peer.FirstByteP99, pct(res.Peer.DirectFirstByte, 99), res.Peer.LastByteP50, res.Peer.LastByteP99, res.Peer.Early, res.Peer.CacheHits)
	seedA.p.Stop()
	q.p.Stop()

	// Eight fresh agents read the same ranges at once, range after range.
	var agents []*agent
	for range 8 {
		agents = append(agents, e.startAgent("", 4<<30))
	}
	clients := make([]*http.Client, len(agents))
	for i := range clients {
		clients[i] = fresh()
	}
	start = time.Now()
	var lasts []float64
	var mu sync.Mutex
	for _, off := range offsets {
		var wg sync.WaitGroup
		w := want(off)
		for i, a := range agents {
			wg.Go(func() {
				rt, err := readRange(ctx, clients[i], a.mirror, b, off, rangeLen, w)
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				lasts = append(lasts, ms(rt.last))
				mu.Unlock()
			})
		}
		wg.Wait()
	}
	res.Swarm8.Seconds = round3(time.Since(start).Seconds())
	for _, a := range agents {
		res.Swarm8.RangeRegistryBytes += scrape(a.mirror, `shoal_agent_registry_piece_bytes_total{reason="range"}`)
		res.Swarm8.RegistryPieceBytes += scrape(a.mirror, `shoal_agent_registry_piece_bytes_total`)
		res.Swarm8.Early += scrape(a.mirror, `shoal_agent_range_responses_total{kind="early"}`)
	}
	res.Swarm8.DistinctBytes, res.Swarm8.DistinctPieceBytes = distinct(offsets, rangeLen, 1<<20, b.size)
	res.Swarm8.RangeRatio = round3(res.Swarm8.RangeRegistryBytes / float64(res.Swarm8.DistinctBytes))
	res.Swarm8.RangeRatioPieces = round3(res.Swarm8.RangeRegistryBytes / float64(res.Swarm8.DistinctPieceBytes))
	res.Swarm8.LastByteP50, res.Swarm8.LastByteP99 = pct(lasts, 50), pct(lasts, 99)
	t.Logf("8 agents: range registry bytes %.0f MiB for %.0f MiB distinct (%.0f MiB of pieces): %.2fx (%.2fx of pieces); registry piece bytes in all %.0f MiB; last byte p50 %.1f p99 %.1f ms",
		res.Swarm8.RangeRegistryBytes/(1<<20), float64(res.Swarm8.DistinctBytes)/(1<<20), float64(res.Swarm8.DistinctPieceBytes)/(1<<20), res.Swarm8.RangeRatio, res.Swarm8.RangeRatioPieces, res.Swarm8.RegistryPieceBytes/(1<<20), res.Swarm8.LastByteP50, res.Swarm8.LastByteP99)
	res.LoadAfter = loadavg()

	j, _ := json.MarshalIndent(res, "", "  ")
	os.MkdirAll(out, 0o755)
	if err := os.WriteFile(filepath.Join(out, "lazy-range.json"), append(j, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	md := res.markdown()
	if err := os.WriteFile(filepath.Join(out, "lazy-range.md"), []byte(md), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + md)
}

type rangeResult struct {
	Date       string   `json:"date"`
	Load       string   `json:"loadavg_before"`
	LoadAfter  string   `json:"loadavg_after"`
	BlobMiB    int      `json:"blob_mib"`
	Ranges     int      `json:"ranges"`
	RangeBytes int64    `json:"range_bytes"`
	PieceBytes int64    `json:"piece_bytes"`
	Cold       coldOut  `json:"cold"`
	Peer       peerOut  `json:"peer"`
	Swarm8     swarmOut `json:"swarm8"`
}

type coldOut struct {
	Direct   []float64 `json:"direct_ms"`
	Agent    []float64 `json:"agent_ms"`
	Ratio    []float64 `json:"ratio"`
	RatioP50 float64   `json:"ratio_p50"`
	RatioP99 float64   `json:"ratio_p99"`
}

func (c *coldOut) summarize() { c.RatioP50, c.RatioP99 = pct(c.Ratio, 50), pct(c.Ratio, 99) }

type peerOut struct {
	FirstByte       []float64 `json:"first_byte_ms"`
	LastByte        []float64 `json:"last_byte_ms"`
	DirectFirstByte []float64 `json:"direct_first_byte_ms"`
	DirectLastByte  []float64 `json:"direct_last_byte_ms"`
	FirstByteP50    float64   `json:"first_byte_p50_ms"`
	FirstByteP99    float64   `json:"first_byte_p99_ms"`
	LastByteP50     float64   `json:"last_byte_p50_ms"`
	LastByteP99     float64   `json:"last_byte_p99_ms"`
	Early           float64   `json:"early_responses"`
	CacheHits       float64   `json:"cache_hits"`
	RegistryBytes   float64   `json:"registry_piece_bytes"`
}

func (p *peerOut) summarize() {
	p.FirstByteP50, p.FirstByteP99 = pct(p.FirstByte, 50), pct(p.FirstByte, 99)
	p.LastByteP50, p.LastByteP99 = pct(p.LastByte, 50), pct(p.LastByte, 99)
}

type swarmOut struct {
	Seconds            float64 `json:"seconds"`
	RangeRegistryBytes float64 `json:"range_registry_bytes"`
	RegistryPieceBytes float64 `json:"registry_piece_bytes"`
	DistinctBytes      int64   `json:"distinct_bytes"`
	DistinctPieceBytes int64   `json:"distinct_piece_bytes"`
	RangeRatio         float64 `json:"range_registry_over_distinct"`
	RangeRatioPieces   float64 `json:"range_registry_over_distinct_pieces"`
	Early              float64 `json:"early_responses"`
	LastByteP50        float64 `json:"last_byte_p50_ms"`
	LastByteP99        float64 `json:"last_byte_p99_ms"`
}

func (r rangeResult) markdown() string {
	var s strings.Builder
	fmt.Fprintf(&s, "# Range reads through the agent (bench/lazy)\n\n%s; %d MiB blob, %d random %d KiB ranges, %d KiB pieces; loopback, one 2-core machine shared with other work (load %s before, %s after): ratios are same-run.\n\n",
		r.Date, r.BlobMiB, r.Ranges, r.RangeBytes>>10, r.PieceBytes>>10, r.Load, r.LoadAfter)
	s.WriteString("| scenario | measure | value | target |\n|---|---|---|---|\n")
	fmt.Fprintf(&s, "| cold (%d fresh agents, first range each) | agent ÷ direct registry Range, to the last byte | p50 %.2f×, p99 %.2f× (agent p50 %.1f ms, direct p50 %.1f ms) | ≤ 1.5× |\n",
		len(r.Cold.Ratio), r.Cold.RatioP50, r.Cold.RatioP99, pct(r.Cold.Agent, 50), pct(r.Cold.Direct, 50))
	fmt.Fprintf(&s, "| peer holds the blob (%d ranges on a fresh agent) | time to first byte | p50 %.2f ms, p99 %.2f ms (direct registry p99 %.2f ms) | p99 ≤ 10 ms |\n",
		len(r.Peer.FirstByte), r.Peer.FirstByteP50, r.Peer.FirstByteP99, pct(r.Peer.DirectFirstByte, 99))
	fmt.Fprintf(&s, "| peer holds the blob | time to last byte | p50 %.2f ms, p99 %.2f ms (direct p50 %.2f, p99 %.2f ms); %v answered early, %v from the cache once complete | |\n",
		r.Peer.LastByteP50, r.Peer.LastByteP99, pct(r.Peer.DirectLastByte, 50), pct(r.Peer.DirectLastByte, 99), r.Peer.Early, r.Peer.CacheHits)
	fmt.Fprintf(&s, "| 8 fresh agents, same ranges at once | registry bytes fetched for ranges ÷ distinct bytes read | %.2f× (÷ distinct covering pieces: %.2f×) | ≤ 1.1× |\n",
		r.Swarm8.RangeRatio, r.Swarm8.RangeRatioPieces)
	fmt.Fprintf(&s, "| 8 fresh agents | all registry piece bytes (ranges + background completion) | %.0f MiB for a %d MiB blob, %.1f s, last byte p50 %.1f ms p99 %.1f ms | |\n",
		r.Swarm8.RegistryPieceBytes/(1<<20), r.BlobMiB, r.Swarm8.Seconds, r.Swarm8.LastByteP50, r.Swarm8.LastByteP99)
	return s.String()
}

// distinct is how many bytes the ranges cover, and how many bytes their
// covering pieces hold.
func distinct(offsets []int64, n, pieceLen, size int64) (bytes, pieceBytes int64) {
	type span struct{ a, b int64 }
	merge := func(ss []span) int64 {
		slices.SortFunc(ss, func(x, y span) int { return int(x.a - y.a) })
		total, cur := int64(0), span{-1, -1}
		for _, s := range ss {
			if s.a > cur.b {
				if cur.b >= 0 {
					total += cur.b - cur.a
				}
				cur = s
			} else {
				cur.b = max(cur.b, s.b)
			}
		}
		if cur.b >= 0 {
			total += cur.b - cur.a
		}
		return total
	}
	var rs, ps []span
	for _, off := range offsets {
		rs = append(rs, span{off, off + n})
		ps = append(ps, span{off / pieceLen * pieceLen, min((off+n+pieceLen-1)/pieceLen*pieceLen, size)})
	}
	return merge(rs), merge(ps)
}

func waitCached(t *testing.T, a *agent, b blob) {
	t.Helper()
	hexd := strings.TrimPrefix(b.digest, "sha256:")
	for deadline := time.Now().Add(5 * time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if _, err := os.Stat(filepath.Join(a.cache, "blobs", hexd)); err == nil {
			return
		}
	}
	t.Fatalf("%s: blob not cached", a.id)
}

func envInt(name string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(name)); err == nil && v > 0 {
		return v
	}
	return def
}

func ms(d time.Duration) float64 { return round3(float64(d) / float64(time.Millisecond)) }

func round3(v float64) float64 { return float64(int64(v*1000+0.5)) / 1000 }

// pct is the p-th percentile (nearest rank).
func pct(vs []float64, p float64) float64 {
	if len(vs) == 0 {
		return 0
	}
	s := slices.Clone(vs)
	slices.Sort(s)
	k := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(k, 0), len(s)-1)]
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
