package agent

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/agent/internal/origin"
	"github.com/shoalproject/shoal/internal/cluster"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// scriptedUpstream is a registry that answers as the test says: a hostile or
// broken upstream, which no real registry can be made to be. By default it
// serves its blobs like a plain registry (HEAD with Content-Length, GET with
// Range) and, for blobs with a torrent, redirects torrent requests.
type scriptedUpstream struct {
	srv      *httptest.Server
	host     string
	mu       sync.Mutex
	blobs    map[string][]byte        // hex → what GET sends
	headSize map[string]int64         // hex → HEAD's Content-Length, if not len(blob)
	torrents map[string]metainfo.Info // hex → torrent offered
	// hook, if set, handles a blob request itself when it returns true.
	hook func(w http.ResponseWriter, r *http.Request, hexd string) bool
	// announce is the tracker its torrents name.
	announce string
	heads    atomic.Int64
	gets     atomic.Int64
}

func startScripted(t *testing.T) *scriptedUpstream {
	u := &scriptedUpstream{blobs: map[string][]byte{}, headSize: map[string]int64{}, torrents: map[string]metainfo.Info{}}
	u.srv = httptest.NewServer(http.HandlerFunc(u.serve))
	t.Cleanup(u.srv.Close)
	u.host = strings.TrimPrefix(u.srv.URL, "http://")
	return u
}

func (u *scriptedUpstream) add(data []byte) v1.Hash {
	sum := sha256.Sum256(data)
	h := hex.EncodeToString(sum[:])
	u.mu.Lock()
	u.blobs[h] = data
	u.mu.Unlock()
	return v1.Hash{Algorithm: "sha256", Hex: h}
}

func (u *scriptedUpstream) serve(w http.ResponseWriter, r *http.Request) {
	if h, ok := strings.CutPrefix(r.URL.Path, "/torrent/"); ok {
		u.mu.Lock()
		info, ok := u.torrents[h]
		u.mu.Unlock()
		if !ok {
			http.NotFound(w, r)
			return
		}
		announce := "http://127.0.0.1:1/announce"
		if u.announce != "" {
			announce = u.announce
		}
		mi := metainfo.MetaInfo{InfoBytes: bencode.MustMarshal(info), Announce: announce}
		w.Header().Set("Content-Type", "application/x-bittorrent")
		mi.Write(w)
		return
	}
	i := strings.LastIndex(r.URL.Path, "/blobs/sha256:")
	if i < 0 {
		http.NotFound(w, r)
		return
	}
	hexd := r.URL.Path[i+len("/blobs/sha256:"):]
	if r.Method == http.MethodHead {
		u.heads.Add(1)
	} else {
		u.gets.Add(1)
	}
	if u.hook != nil && u.hook(w, r, hexd) {
		return
	}
	u.mu.Lock()
	data, ok := u.blobs[hexd]
	size, sized := u.headSize[hexd]
	_, hasTorrent := u.torrents[hexd]
	u.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	switch {
	case r.Header.Get("Accept") == "application/x-bittorrent" && hasTorrent:
		http.Redirect(w, r, "/torrent/"+hexd, http.StatusTemporaryRedirect)
	case r.Method == http.MethodHead:
		if !sized {
			size = int64(len(data))
		}
		w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
		w.WriteHeader(http.StatusOK)
	default:
		http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	}
}

// tryGet is getBlob for goroutines and for answers that may never come: an
// error instead of t.Fatal, and a time limit.
func tryGet(mirror, repo string, d v1.Hash, hdr map[string]string) (int, string, []byte, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+mirror+"/v2/"+repo+"/blobs/"+d.String(), nil)
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: 20 * time.Second}).Do(req)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	sum := sha256.Sum256(b)
	return resp.StatusCode, "sha256:" + hex.EncodeToString(sum[:]), b, err
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// memberHTTP is an HTTP client holding a certificate of the test cluster,
// as preheat does: the control API serves members only.
func memberHTTP(t *testing.T) *http.Client {
	t.Helper()
	auth, err := cluster.NewAuthority(testClusterSecret)
	if err != nil {
		t.Fatal(err)
	}
	me, err := auth.Issue("preheat", nil)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: auth.ClientTLS(me, nil)}}
}

func postFetch(t *testing.T, control string, body any) (int, map[string]any) {
	t.Helper()
	b, _ := json.Marshal(body)
	resp, err := memberHTTP(t).Post("https://"+control+"/_shoal/v1/fetch", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	json.NewDecoder(resp.Body).Decode(&out)
	return resp.StatusCode, out
}

// A control request naming a registry that is not a configured upstream is
// refused before the agent connects anywhere, cached digest or not; other
// spellings of the configured one are accepted.
func TestUnconfiguredRegistryRefused(t *testing.T) {
	up := startScripted(t)
	d := up.add(randomBytes(300 << 10))
	evil, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	var dialed atomic.Int64
	go func() {
		for {
			c, err := evil.Accept()
			if err != nil {
				return
			}
			dialed.Add(1)
			c.Close()
		}
	}()
	cfg := testConfig(t, up.host)
	cfg.P2P.Enabled = false
	ag := startAgent(t, cfg)

	refuse := func(registry string) {
		t.Helper()
		st, out := postFetch(t, ag.control, map[string]any{"registry": registry, "repository": "lib/x", "digest": d.String()})
		if msg, _ := out["error"].(string); st != http.StatusForbidden || !strings.Contains(msg, "not a configured upstream") {
			t.Errorf("registry %q: %d %v, want 403 naming the allow-list", registry, st, out)
		}
	}
	evilURL := "http://" + evil.Addr().String()
	refuse(evilURL)
	refuse(evilURL + "/v2")
	refuse("http://user:pw@" + up.host)
	refuse("https://" + up.host) // another scheme is another registry
	if st, out := postFetch(t, ag.control, map[string]any{"registry": "HTTP://" + strings.ToUpper(up.host) + "/", "repository": "lib/x", "digest": d.String()}); st != 200 {
		t.Fatalf("configured upstream, other spelling: %d %v", st, out)
	}
	refuse(evilURL) // cached now: still refused, not answered from the cache
	if n := dialed.Load(); n != 0 {
		t.Errorf("the agent connected to the unconfigured registry %d times", n)
	}
	if st, _, _ := getBlob(t, ag.mirror, "lib/x", d, nil); st != 200 {
		t.Errorf("agent unwell after refusals: %d", st)
	}
}

// Torrents that do not describe the blob the upstream's HEAD announced are
// refused before anything is reserved: the agent stays up, the cache keeps
// what it had, and the blob comes over HTTP.
func TestOversizedTorrentRefused(t *testing.T) {
	up := startScripted(t)
	keep := up.add(randomBytes(8 << 20))
	cfg := testConfig(t, up.host)
	cfg.Cache.MaxBytes = 64 << 20
	ag := startAgent(t, cfg)
	if st, sum, _ := getBlob(t, ag.mirror, "lib/x", keep, nil); st != 200 || sum != keep.String() {
		t.Fatalf("first blob: %d %s", st, sum)
	}
	for _, tc := range []struct {
		name string
		info func(hexd string) metainfo.Info
	}{
		{"a terabyte in one piece", func(h string) metainfo.Info {
			return metainfo.Info{Name: h, Length: 1 << 40, PieceLength: 1 << 40, Pieces: make([]byte, 20)}
		}},
		{"a terabyte in 1 MiB pieces", func(h string) metainfo.Info {
			return metainfo.Info{Name: h, Length: 1 << 40, PieceLength: 1 << 20, Pieces: make([]byte, 20<<20)}
		}},
		// Within cache.maxBytes, well formed, but not the size the upstream
		// gave: reserving it would evict the whole cache.
		{"60 MiB for a 1 MiB blob", func(h string) metainfo.Info {
			return metainfo.Info{Name: h, Length: 60 << 20, PieceLength: 1 << 20, Pieces: make([]byte, 60*20)}
		}},
	} {
		d := up.add(randomBytes(1<<20 + 5))
		up.mu.Lock()
		up.torrents[d.Hex] = tc.info(d.Hex)
		up.mu.Unlock()
		before := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="bad_torrent"}`)
		if st, sum, _ := getBlob(t, ag.mirror, "lib/x", d, nil); st != 200 || sum != d.String() {
			t.Errorf("%s: pull %d %s", tc.name, st, sum)
		}
		if v := metric(t, ag.mirror, `shoal_agent_fallbacks_total{reason="bad_torrent"}`); v != before+1 {
			t.Errorf("%s: torrent not refused (bad_torrent %v → %v)", tc.name, before, v)
		}
		h, ok := ag.store.Lookup(keep.Hex)
		if !ok {
			t.Fatalf("%s: the cached blob was evicted", tc.name)
		}
		if err := h.Verify(); err != nil {
			t.Errorf("%s: cached blob damaged: %v", tc.name, err)
		}
		h.Release()
		if used, _ := ag.store.Usage(); used > cfg.Cache.MaxBytes {
			t.Errorf("%s: cache uses %d bytes, more than its %d", tc.name, used, cfg.Cache.MaxBytes)
		}
		// Nor is the refused torrent kept or seeded.
		if ag.store.HasMetainfo(d.Hex) {
			t.Errorf("%s: refused torrent metadata kept", tc.name)
		}
		if n := ag.p2p.ActiveTorrents(); n != 0 {
			t.Errorf("%s: %d torrents added", tc.name, n)
		}
	}
}

// A hung upstream (no headers; headers then nothing) fails or resumes the
// download within the configured timeouts, and the next request succeeds.
// A body longer than the HEAD's size, without Content-Length, is cut at
// that size.
func TestHungUpstream(t *testing.T) {
	up := startScripted(t)
	var mode atomic.Int32 // 0 normal, 1 hang before headers, 2 hang mid-body, 3 overlong chunked body
	stop := make(chan struct{})
	defer close(stop)
	var ranged atomic.Int64
	up.hook = func(w http.ResponseWriter, r *http.Request, hexd string) bool {
		if r.Method != http.MethodGet {
			return false
		}
		if r.Header.Get("Range") != "" {
			ranged.Add(1)
		}
		switch mode.Load() {
		case 1:
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return true
		case 2:
			mode.Store(0) // once
			up.mu.Lock()
			data := up.blobs[hexd]
			up.mu.Unlock()
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.Write(data[:len(data)/2])
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-stop:
			}
			return true
		case 3:
			up.mu.Lock()
			data := up.blobs[hexd]
			up.mu.Unlock()
			w.(http.Flusher).Flush() // chunked: no Content-Length
			w.Write(data)
			w.Write(randomBytes(1 << 20))
			return true
		}
		return false
	}
	cfg := testConfig(t, up.host)
	cfg.P2P.Enabled = false
	cfg.UpstreamTimeouts.ResponseHeader = 300 * time.Millisecond
	cfg.UpstreamTimeouts.IdleRead = 300 * time.Millisecond
	ag := startAgent(t, cfg)
	client := &http.Client{Timeout: 30 * time.Second}
	get := func(d v1.Hash) (int, []byte, error) {
		resp, err := client.Get("http://" + ag.mirror + "/v2/lib/x/blobs/" + d.String())
		if err != nil {
			return 0, nil, err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return resp.StatusCode, b, err
	}

	data := randomBytes(2 << 20)
	d := up.add(data)
	mode.Store(1)
	start := time.Now()
	if st, _, err := get(d); err == nil && st == 200 {
		t.Fatal("a hung upstream delivered the blob")
	}
	if el := time.Since(start); el > 15*time.Second {
		t.Errorf("hung upstream took %s to fail", el)
	}
	mode.Store(0)
	if st, b, err := get(d); err != nil || st != 200 || !bytes.Equal(b, data) {
		t.Fatalf("after the upstream recovered: %d %v (%d bytes)", st, err, len(b))
	}

	data2 := randomBytes(2 << 20)
	d2 := up.add(data2)
	mode.Store(2)
	if st, b, err := get(d2); err != nil || st != 200 || !bytes.Equal(b, data2) {
		t.Fatalf("body hung halfway: %d %v (%d bytes)", st, err, len(b))
	}
	if ranged.Load() == 0 {
		t.Error("the hung body was not resumed with Range")
	}

	data3 := randomBytes(1 << 20)
	d3 := up.add(data3)
	mode.Store(3)
	if st, b, err := get(d3); err != nil || st != 200 || !bytes.Equal(b, data3) {
		t.Fatalf("overlong body without Content-Length: %d %v (%d bytes)", st, err, len(b))
	}
}

// The same digest on two upstreams is two downloads: a slow attacker
// upstream's flight for D never hands a byte to a client of D on the real
// upstream, whole blob or a range that ends early.
func TestAttackerFlightNeverReachesOtherUpstream(t *testing.T) {
	legit := startScripted(t)
	data := randomBytes(1 << 20)
	d := legit.add(data)
	evil := startScripted(t)
	garbage := randomBytes(len(data))
	stop := make(chan struct{})
	defer close(stop)
	sent := make(chan struct{})
	var once sync.Once
	evil.hook = func(w http.ResponseWriter, r *http.Request, hexd string) bool {
		if r.Method == http.MethodHead {
			w.Header().Set("Content-Length", strconv.Itoa(len(data)))
			w.WriteHeader(http.StatusOK)
			return true
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(data)))
		w.Write(garbage[:len(garbage)/2])
		w.(http.Flusher).Flush()
		once.Do(func() { close(sent) })
		select { // slow: the rest never comes while the test runs
		case <-r.Context().Done():
		case <-stop:
		}
		return true
	}
	cfg := testConfig(t, legit.host)
	cfg.P2P.Enabled = false
	cfg.Upstreams = append(cfg.Upstreams, Upstream{Host: evil.host, URL: "http://" + evil.host})
	ag := startAgent(t, cfg)

	go func() {
		resp, err := http.Get("http://" + ag.mirror + "/v2/lib/x/blobs/" + d.String() + "?ns=" + evil.host)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
	}()
	select {
	case <-sent:
	case <-time.After(10 * time.Second):
		t.Fatal("the attacker's flight never started")
	}
	st, _, b, err := tryGet(ag.mirror, "lib/x", d, map[string]string{"Range": "bytes=0-1023"})
	if err != nil || st != http.StatusPartialContent || !bytes.Equal(b, data[:1024]) {
		t.Errorf("early range from the real upstream: %d %v, attacker bytes: %v", st, err, len(b) > 0 && bytes.Equal(b, garbage[:len(b)]))
	}
	if st, sum, _, err := tryGet(ag.mirror, "lib/x", d, nil); err != nil || st != 200 || sum != d.String() {
		t.Errorf("whole blob from the real upstream: %d %s %v", st, sum, err)
	}
}

// Credentials are per requester: a flight whose credentials the upstream
// refuses midway (expired) or from the start (valid for HEAD only) goes on
// with a joiner's, so a bad starter fails nobody else; and a joiner whose
// own credentials are refused gets no byte, Range or not.
func TestFlightCredentialsPerJoiner(t *testing.T) {
	for _, starter := range []string{"expiring", "headonly"} {
		t.Run(starter, func(t *testing.T) {
			up := startScripted(t)
			data := randomBytes(2 << 20)
			d := up.add(data)
			atHold := make(chan struct{}, 1)
			release := make(chan struct{})
			var held atomic.Bool
			up.hook = func(w http.ResponseWriter, r *http.Request, hexd string) bool {
				tok := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
				switch {
				case tok == "good":
					return false
				case r.Method == http.MethodHead && (tok == "expiring" || tok == "headonly"):
					return false
				case tok == "expiring" && r.Header.Get("Range") == "" && held.CompareAndSwap(false, true):
					// The first GET: half the blob, then the connection
					// breaks once the joiner is in; the token has expired
					// by the time the agent resumes.
					w.Header().Set("Content-Length", strconv.Itoa(len(data)))
					w.Write(data[:len(data)/2])
					w.(http.Flusher).Flush()
					atHold <- struct{}{}
					<-release
					panic(http.ErrAbortHandler)
				case tok == "headonly" && held.CompareAndSwap(false, true):
					atHold <- struct{}{}
					<-release
				}
				w.Header().Set("WWW-Authenticate", `Bearer realm="test"`)
				http.Error(w, "denied", http.StatusUnauthorized)
				return true
			}
			cfg := testConfig(t, up.host)
			cfg.P2P.Enabled = false
			ag := startAgent(t, cfg)

			type result struct {
				st  int
				sum string
				err error
			}
			pull := func(tok string, hdr map[string]string) chan result {
				ch := make(chan result, 1)
				go func() {
					h := map[string]string{"Authorization": "Bearer " + tok}
					for k, v := range hdr {
						h[k] = v
					}
					st, sum, _, err := tryGet(ag.mirror, "lib/x", d, h)
					ch <- result{st, sum, err}
				}()
				return ch
			}
			first := pull(starter, nil)
			select {
			case <-atHold:
			case <-time.After(10 * time.Second):
				t.Fatal("the starter's download never reached the upstream")
			}
			// A joiner with refused credentials: no bytes, whole or ranged.
			for _, hdr := range []map[string]string{nil, {"Range": "bytes=0-99"}} {
				if r := <-pull("stolen", hdr); r.st != http.StatusUnauthorized {
					t.Errorf("joiner with bad credentials %v: %d %v", hdr, r.st, r.err)
				}
			}
			second := pull("good", nil)
			key := origin.Key{Base: "http://" + up.host, Hex: d.Hex}
			deadline := time.Now().Add(10 * time.Second)
			for {
				n := ag.fetch.Requesters(key.Base, key.Hex)
				if n == 2 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("the good joiner never joined (%d requesters)", n)
				}
				time.Sleep(5 * time.Millisecond)
			}
			close(release)
			if r := <-second; r.err != nil || r.st != 200 || r.sum != d.String() {
				t.Errorf("legitimate joiner: %d %s %v", r.st, r.sum, r.err)
			}
			if r := <-first; r.err != nil || r.st != 200 || r.sum != d.String() {
				t.Errorf("starter (its HEAD was allowed): %d %s %v", r.st, r.sum, r.err)
			}
		})
	}
}
