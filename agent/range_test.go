package agent

import (
	"bytes"
	"io"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// A Range of a cold blob is answered as soon as its pieces verified, long
// before the whole blob is in: its pieces jump the download's queue (from
// the registry here, alone), and the blob completes in the background.
func TestRangeBeforeBlobComplete(t *testing.T) {
	trackerURL, _ := startShoalTracker(t, testTrackerSecret)
	reg := startShoalRegistrySecret(t, trackerURL, testTrackerSecret, 0, true)
	img := pushRandom(t, reg, "lib/lazy", 24<<20, 1)
	d := layerDigests(t, img)[0]
	l, _ := img.LayerByDigest(d)
	rc, _ := l.Compressed()
	whole, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	cfg := swarmConfig(t, reg)
	// The whole blob takes ~6 s at this rate; the range's two pieces
	// well under one.
	cfg.P2P.DownloadBytesPerSec = 4 << 20
	a := startAgent(t, cfg)

	from := int64(len(whole)) - 3<<20 + 12345
	to := from + 1<<20 - 1
	start := time.Now()
	st, _, part := getBlob(t, a.mirror, "lib/lazy", d, map[string]string{"Range": rangeHeader(from, to)})
	took := time.Since(start)
	if st != http.StatusPartialContent || !bytes.Equal(part, whole[from:to+1]) {
		t.Fatalf("Range: status %d, %d bytes, equal %v", st, len(part), bytes.Equal(part, whole[from:to+1]))
	}
	if h, ok := a.store.Lookup(d.Hex); ok {
		h.Release()
		t.Fatalf("blob already cached after %s: the range did not go first", took)
	}
	t.Logf("1 MiB range near the end of a cold %d-byte blob in %s", len(whole), took)
	if v := metric(t, a.mirror, `shoal_agent_range_responses_total{kind="early"}`); v != 1 {
		t.Errorf("early range responses %v, want 1", v)
	}
	if v := metric(t, a.mirror, `shoal_agent_registry_piece_bytes_total{reason="range"}`); v < 1<<20 || v > 3<<20 {
		t.Errorf("registry bytes for the range %v, want its covering pieces (1-3 MiB)", v)
	}
	// A range from byte 0 is early too: its pieces verified and went out
	// before the blob was whole, though they lie in the present prefix
	// (counted "stream" before).
	if st, _, head := getBlob(t, a.mirror, "lib/lazy", d, map[string]string{"Range": rangeHeader(0, 1<<20-1)}); st != http.StatusPartialContent || !bytes.Equal(head, whole[:1<<20]) {
		t.Fatalf("Range from byte 0: status %d, %d bytes", st, len(head))
	}
	if h, ok := a.store.Lookup(d.Hex); ok {
		h.Release()
		t.Fatal("blob already cached after the range from byte 0: it proves nothing")
	}
	if v := metric(t, a.mirror, `shoal_agent_range_responses_total{kind="early"}`); v != 2 {
		t.Errorf("early range responses %v after a range from byte 0, want 2 (stream: %v)", v, metric(t, a.mirror, `shoal_agent_range_responses_total{kind="stream"}`))
	}
	// A range longer than the wanted window (16 pieces) slides it along.
	if st, _, long := getBlob(t, a.mirror, "lib/lazy", d, map[string]string{"Range": rangeHeader(1, 20<<20)}); st != http.StatusPartialContent || !bytes.Equal(long, whole[1:20<<20+1]) {
		t.Fatalf("long Range: status %d, %d bytes", st, len(long))
	}
	// The rest follows in the background, verified as a whole.
	waitCached(t, a.Agent, d.Hex)
	if st, sum, _ := getBlob(t, a.mirror, "lib/lazy", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("whole blob after the range: %d %s", st, sum)
	}
}

func rangeHeader(from, to int64) string {
	return "bytes=" + itoa(from) + "-" + itoa(to)
}

func itoa(n int64) string { return strconv.FormatInt(n, 10) }
