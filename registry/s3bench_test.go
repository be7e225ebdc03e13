package registry

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestS3Benchmark is `make bench`'s object-storage row, not a test: it runs
// only when SHOAL_BENCH_OUT names a directory. The same blob, pushed to a
// Shoal registry on the filesystem and to one on S3 (Versity gateway,
// loopback), is read the ways nodes read it — by a BitTorrent client from
// the seeder, and in 1 MiB ranges from the piece endpoint (an agent's
// registry share) — in the same run, interleaved, best of three. The ratio
// is S3 over filesystem; the store's ranged reads are counted per piece.
func TestS3Benchmark(t *testing.T) {
	out := os.Getenv("SHOAL_BENCH_OUT")
	if out == "" {
		t.Skip("benchmark; run with `make bench`")
	}
	mib := int64(128)
	if v, err := strconv.Atoi(os.Getenv("SHOAL_BENCH_S3_MIB")); err == nil && v > 0 {
		mib = int64(v)
	}
	size := mib << 20
	s3 := startS3(t)
	fs := startRegistry(t, regOpts{logLevel: "error", pieceLen: 1 << 20})
	ob := startRegistry(t, regOpts{logLevel: "error", pieceLen: 1 << 20, storage: s3.storage()})
	dgst := streamUpload(t, fs.URL(), "bench/s3", size, 7)
	if d := streamUpload(t, ob.URL(), "bench/s3", size, 7); d != dgst {
		t.Fatalf("same seed, different blobs: %s %s", d, dgst)
	}
	pieces := size >> 20

	type row struct {
		Path        string  `json:"path"`
		FSMiBs      float64 `json:"filesystem_mib_s"`
		S3MiBs      float64 `json:"s3_mib_s"`
		Ratio       float64 `json:"s3_over_filesystem"`
		StoreReads  int64   `json:"s3_ranged_reads"`
		StorePieces int64   `json:"pieces"`
	}
	measure := func(name string, run func(r *testRegistry) time.Duration) row {
		var f, s []float64
		var reads int64
		for round := 0; round < 3; round++ {
			f = append(f, float64(mib)/run(fs).Seconds())
			before := s3.ranged.Load()
			s = append(s, float64(mib)/run(ob).Seconds())
			reads = s3.ranged.Load() - before
		}
		r := row{Path: name, FSMiBs: maxOf(f), S3MiBs: maxOf(s), StoreReads: reads, StorePieces: pieces}
		r.Ratio = r.S3MiBs / r.FSMiBs
		t.Logf("%-40s filesystem %7.1f MiB/s  s3 %7.1f MiB/s  ratio %.3f  store reads %d for %d pieces", name, r.FSMiBs, r.S3MiBs, r.Ratio, reads, pieces)
		return r
	}
	rows := []row{
		measure("seeder → BitTorrent client", func(r *testRegistry) time.Duration {
			_, loc := torrentRedirect(t, r.URL(), "bench/s3", dgst, nil)
			mi := fetchMetainfo(t, loc)
			start := time.Now()
			downloadFromSeeder(t, mi, r.SeederAddr)
			return time.Since(start)
		}),
		measure("piece endpoint, 1 MiB ranges (agent share)", func(r *testRegistry) time.Duration {
			blobURL, _ := blobURLFromTorrent(t, r, "bench/s3", dgst)
			start := time.Now()
			for off := int64(0); off < size; off += 1 << 20 {
				req, _ := http.NewRequest(http.MethodGet, blobURL, nil)
				req.Header.Set("Range", fmt.Sprintf("bytes=%d-%d", off, min(off+1<<20, size)-1))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				n, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusPartialContent || n != min(1<<20, size-off) {
					t.Fatalf("range at %d: %d, %d bytes", off, resp.StatusCode, n)
				}
			}
			return time.Since(start)
		}),
		measure("blob GET (S3: presigned redirect)", func(r *testRegistry) time.Duration {
			start := time.Now()
			resp, err := http.Get(r.URL() + "/v2/bench/s3/blobs/" + dgst)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || n != size {
				t.Fatalf("GET: %d, %d bytes", resp.StatusCode, n)
			}
			return time.Since(start)
		}),
	}
	os.MkdirAll(out, 0o755)
	j, _ := json.MarshalIndent(map[string]any{"date": time.Now().UTC().Format(time.RFC3339), "blob_mib": mib, "rows": rows}, "", "  ")
	os.WriteFile(filepath.Join(out, "registry-s3.json"), j, 0o644)
	var md strings.Builder
	fmt.Fprintf(&md, "# Registry on S3\n\n%d MiB blob, 1 MiB pieces; Shoal on the filesystem vs Shoal on S3 (Versity gateway, posix backend, loopback), same run, interleaved, best of 3.\n\n", mib)
	md.WriteString("| read | filesystem MiB/s | S3 MiB/s | S3/filesystem | S3 ranged reads (last round) / pieces |\n|---|---|---|---|---|\n")
	for _, r := range rows {
		fmt.Fprintf(&md, "| %s | %.1f | %.1f | %.3f | %d / %d |\n", r.Path, r.FSMiBs, r.S3MiBs, r.Ratio, r.StoreReads, r.StorePieces)
	}
	os.WriteFile(filepath.Join(out, "registry-s3.md"), []byte(md.String()), 0o644)
}
