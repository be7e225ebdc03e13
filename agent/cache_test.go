package agent

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"

	"github.com/shoalproject/shoal/agent/internal/store"
	"github.com/shoalproject/shoal/internal/testenv"
)

// crashEnv carries the config of TestCrashingAgentProcess's agent and the
// commit step at which it kills itself.
const crashEnv = "SHOAL_TEST_CRASH_AGENT"

type crashSpec struct {
	Cfg  Config
	Step string
}

// TestCrashingAgentProcess is not a test of its own: TestCommitKilled runs
// the test binary as an agent process (this function) that SIGKILLs itself
// at one step of a blob's commit.
func TestCrashingAgentProcess(t *testing.T) {
	raw := os.Getenv(crashEnv)
	if raw == "" {
		t.Skip("helper process of TestCommitKilled")
	}
	var spec crashSpec
	if err := json.Unmarshal([]byte(raw), &spec); err != nil {
		t.Fatal(err)
	}
	a, err := New(spec.Cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", spec.Cfg.Mirror.Addr)
	if err != nil {
		t.Fatal(err)
	}
	a.store.SetCommitStep(func(s string) {
		if s == spec.Step {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {}
		}
	})
	a.Serve(context.Background(), l)
}

// kill -9 at every step of a commit leaves the old state (no blob) or the
// whole blob, which the restarted agent hashes before it serves it; nothing
// half-written is ever served.
func TestCommitKilled(t *testing.T) {
	up := startScripted(t)
	for _, step := range []string{"begin", "renamed", "synced", "dirsynced"} {
		t.Run(step, func(t *testing.T) {
			data := randomBytes(3<<20 + 7)
			d := up.add(data)
			cfg := testConfig(t, up.host)
			cfg.P2P.Enabled = false
			raw, _ := json.Marshal(crashSpec{Cfg: cfg, Step: step})
			cmd := exec.Command(os.Args[0], "-test.run=^TestCrashingAgentProcess$")
			cmd.Env = append(os.Environ(), crashEnv+"="+string(raw))
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			exited := make(chan error, 1)
			go func() { exited <- cmd.Wait() }()
			testenv.WaitHTTPOK(t, "http://"+cfg.Mirror.Addr+"/healthz", 30*time.Second)
			tryGet(cfg.Mirror.Addr, "lib/x", d, nil) // the process dies under it
			select {
			case err := <-exited:
				if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); !ok || ws.Signal() != syscall.SIGKILL {
					t.Fatalf("agent process ended with %v, not killed at %q", err, step)
				}
			case <-time.After(30 * time.Second):
				cmd.Process.Kill()
				t.Fatalf("agent never reached commit step %q", step)
			}

			c, err := store.Open(cfg.Cache.Dir, store.Options{MaxBytes: cfg.Cache.MaxBytes})
			if err != nil {
				t.Fatal(err)
			}
			h, cached := c.Lookup(d.Hex)
			switch {
			case step == "begin" && cached:
				t.Fatal("a blob is cached although the agent died before its commit")
			case step != "begin" && !cached:
				t.Fatal("the blob renamed into the cache is gone after the crash")
			case cached:
				if h.Verified() {
					t.Error("a blob found after a restart counts as verified before it was hashed")
				}
				if err := h.Verify(); err != nil {
					t.Errorf("blob after the crash: %v", err)
				}
				h.Release()
			}
			// Only an interrupted download's file, kept to resume from,
			// and only while the blob is not cached.
			left, _ := os.ReadDir(filepath.Join(cfg.Cache.Dir, "partial"))
			for _, de := range left {
				if de.Name() != d.Hex+".resume" || cached {
					t.Errorf("partial file %s survived the restart", de.Name())
				}
			}
			// And the restarted agent serves the exact blob.
			cfg.Mirror.Addr, cfg.Control.Addr = testenv.FreeAddr(t), testenv.FreeAddr(t)
			ag := startAgent(t, cfg)
			if st, sum, _ := getBlob(t, ag.mirror, "lib/x", d, nil); st != 200 || sum != d.String() {
				t.Errorf("after the crash: %d %s", st, sum)
			}
		})
	}
}

// A restarted agent hashes a cached blob before it seeds it again: a blob
// damaged on disk (a torn write the crash left, a bad sector) is deleted,
// not offered to other nodes; an intact one is seeded.
func TestReseedVerifiesFirst(t *testing.T) {
	cfg := testConfig(t, "127.0.0.1:1")
	dir := cfg.Cache.Dir
	st, err := store.Open(dir, store.Options{MaxBytes: cfg.Cache.MaxBytes})
	if err != nil {
		t.Fatal(err)
	}
	put := func(data []byte, damage bool) string {
		d := (&scriptedUpstream{blobs: map[string][]byte{}}).add(data)
		info := metainfo.Info{Name: d.Hex, Length: int64(len(data)), PieceLength: 256 << 10}
		if err := info.GeneratePieces(func(metainfo.FileInfo) (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(data)), nil }); err != nil {
			t.Fatal(err)
		}
		mi := metainfo.MetaInfo{InfoBytes: bencode.MustMarshal(info), Announce: "http://127.0.0.1:1/announce"}
		if err := st.SaveMetainfo(d.Hex, &mi); err != nil {
			t.Fatal(err)
		}
		if damage {
			data = append([]byte{}, data...)
			data[len(data)/2] ^= 1
		}
		if err := os.WriteFile(filepath.Join(dir, "blobs", d.Hex), data, 0o600); err != nil {
			t.Fatal(err)
		}
		return d.Hex
	}
	good := put(randomBytes(1<<20), false)
	bad := put(randomBytes(1<<20), true)
	ag := startAgent(t, cfg)
	// Blobs are re-checked in no particular order: wait until the intact
	// one is seeded and the damaged one has been dealt with.
	deadline := time.Now().Add(20 * time.Second)
	for {
		seeded, badSeeded := ag.fetch.Seeding(good), ag.fetch.Seeding(bad)
		if badSeeded {
			t.Fatal("a blob that fails its digest is seeded after the restart")
		}
		h, cached := ag.store.Lookup(bad)
		if cached {
			h.Release()
		}
		_, statErr := os.Stat(filepath.Join(dir, "blobs", bad))
		if seeded && !cached && os.IsNotExist(statErr) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after 20 s: intact blob seeded %v, damaged blob still cached %v, its file: %v", seeded, cached, statErr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if resp, err := http.Get("http://" + ag.mirror + "/healthz"); err == nil {
		resp.Body.Close()
	}
}

// The cache is the agent's alone: directories 0700, files 0600, also for a
// cache an older version left world-readable.
func TestCacheModes(t *testing.T) {
	up := startScripted(t)
	d := up.add(randomBytes(1 << 20))
	cfg := testConfig(t, up.host)
	for _, sub := range []string{"blobs", "torrents"} {
		os.MkdirAll(filepath.Join(cfg.Cache.Dir, sub), 0o755)
	}
	old := up.add(randomBytes(1000))
	os.WriteFile(filepath.Join(cfg.Cache.Dir, "blobs", old.Hex), up.blobs[old.Hex], 0o644)
	os.Chmod(cfg.Cache.Dir, 0o755)
	ag := startAgent(t, cfg)
	if st, sum, _ := getBlob(t, ag.mirror, "lib/x", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("pull: %d %s", st, sum)
	}
	filepath.Walk(cfg.Cache.Dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, fi.Mode().Perm(), want)
		}
		return nil
	})
}

// A blob's partial file becomes its cache file at commit, while the
// flight that downloaded it is still finishing (syncs, seeding). A
// requester that finds the cached copy corrupted then must fetch it
// again, not join that flight and read the very file it just found bad.
func TestCorruptedDuringCommit(t *testing.T) {
	up := startScripted(t)
	data := randomBytes(1<<20 + 3)
	d := up.add(data)
	cfg := testConfig(t, up.host)
	cfg.P2P.Enabled = false
	a, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	reached, resume := make(chan struct{}), make(chan struct{})
	var once sync.Once
	a.store.SetCommitStep(func(s string) {
		if s == "synced" { // renamed into the cache, the flight not ended
			once.Do(func() {
				close(reached)
				<-resume
			})
		}
	})
	l, err := net.Listen("tcp", cfg.Mirror.Addr)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.Serve(ctx, l) }()
	defer func() {
		cancel()
		<-served
	}()
	resumed := sync.OnceFunc(func() { close(resume) })
	defer resumed()
	testenv.WaitHTTP(t, nil, "http://"+cfg.Mirror.Addr+"/healthz", 10*time.Second)

	if st, sum, _ := getBlob(t, cfg.Mirror.Addr, "lib/x", d, nil); st != 200 || sum != d.String() {
		t.Fatalf("first fetch: %d %s", st, sum)
	}
	select {
	case <-reached:
	case <-time.After(20 * time.Second):
		t.Fatal("the commit never reached its sync")
	}
	path := filepath.Join(cfg.Cache.Dir, "blobs", d.Hex)
	if err := os.WriteFile(path, bytes.Repeat([]byte{1}, len(data)), 0o600); err != nil {
		t.Fatal(err)
	}
	// Not left to the clock's granularity: the file changed.
	if err := os.Chtimes(path, time.Now(), time.Now().Add(-time.Hour)); err != nil {
		t.Fatal(err)
	}
	st, sum, _, err := tryGet(cfg.Mirror.Addr, "lib/x", d, nil)
	resumed()
	if err == nil && st == 200 && sum != d.String() {
		t.Fatalf("corrupted cache file served: %d %s", st, sum)
	}
	if err != nil || st != 200 {
		t.Fatalf("fetch after corruption: %d %v", st, err)
	}
	if n := up.gets.Load(); n != 2 {
		t.Errorf("upstream blob GETs = %d, want 2 (fetched again once)", n)
	}
}

// The cache's bound holds while several large blobs download at once
// (ORAS pulls three at a time): their reservations count from the start,
// a download that finds no room waits for it, and every client still gets
// its verified bytes. The bound fits two of the four blobs.
func TestCacheBoundHolds(t *testing.T) {
	reg := startUpstreamRegistry(t, "")
	const size, blobs = 6 << 20, 4
	img := pushRandom(t, reg, "lib/big", size, blobs)
	cfg := testConfig(t, reg)
	cfg.Cache.MaxBytes = 2*size + size/3
	cfg.P2P.DownloadBytesPerSec = 16 << 20 // shared: the four overlap
	a := startAgent(t, cfg)

	// Sample the store's count and the bytes really on disk under the
	// cache's blobs/ and partial/ until the pulls end.
	var peakUsed, peakDisk int64
	stop := make(chan struct{})
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			used, _ := a.store.Usage()
			peakUsed = max(peakUsed, used)
			peakDisk = max(peakDisk, cacheDiskBytes(cfg.Cache.Dir))
			select {
			case <-stop:
				return
			case <-tick.C:
			}
		}
	}()
	var wg sync.WaitGroup
	for _, d := range layerDigests(t, img) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if st, sum, _ := getBlob(t, a.mirror, "lib/big", d, nil); st != http.StatusOK || sum != d.String() {
				t.Errorf("blob %s: status %d, body %s", d, st, sum)
			}
		}()
	}
	wg.Wait()
	close(stop)
	<-sampled
	t.Logf("bound %d MiB: peak use %.1f MiB counted, %.1f MiB on disk; waits admitted %v", cfg.Cache.MaxBytes>>20,
		float64(peakUsed)/(1<<20), float64(peakDisk)/(1<<20), metric(t, a.mirror, `shoal_agent_cache_room_waits_total{result="admitted"}`))
	if peakUsed > cfg.Cache.MaxBytes || peakDisk > cfg.Cache.MaxBytes {
		t.Errorf("cache use peaked at %d bytes counted, %d on disk: over its bound of %d", peakUsed, peakDisk, cfg.Cache.MaxBytes)
	}
	if v := metric(t, a.mirror, `shoal_agent_cache_room_waits_total{result="admitted"}`); v < 1 {
		t.Errorf("no download waited for room (%v): the test did not fill the cache", v)
	}
}

// cacheDiskBytes is what the cache's blob files take on disk (allocated
// blocks, at most each file's length).
func cacheDiskBytes(dir string) int64 {
	var n int64
	for _, sub := range []string{"blobs", "partial"} {
		des, _ := os.ReadDir(filepath.Join(dir, sub))
		for _, de := range des {
			fi, err := de.Info()
			if err != nil || !fi.Mode().IsRegular() {
				continue
			}
			if st, ok := fi.Sys().(*syscall.Stat_t); ok {
				n += min(fi.Size(), st.Blocks*512)
			}
		}
	}
	return n
}
