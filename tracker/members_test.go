package tracker

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	anatracker "github.com/anacrolix/torrent/tracker"

	"github.com/shoalproject/shoal/internal/announce"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/token"
)

// memberAnnounce announces as member name with anacrolix's client, the
// signature added by the same hook the agent sets
// (ClientConfig.HttpRequestDirector).
func memberAnnounce(t *testing.T, announceURL, join, name string, r anatracker.AnnounceRequest) (anatracker.AnnounceResponse, error) {
	t.Helper()
	s, err := announce.NewSigner(join, name)
	if err != nil {
		t.Fatal(err)
	}
	cl, err := anatracker.NewClient(announceURL, anatracker.NewClientOpts{})
	if err != nil {
		t.Fatal(err)
	}
	defer cl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return cl.Announce(ctx, r, anatracker.AnnounceOpt{HttpRequestDirector: s.Sign})
}

func ports(resp anatracker.AnnounceResponse) []int {
	var out []int
	for _, p := range resp.Peers {
		out = append(out, p.Port)
	}
	return out
}

// TestForgedAnnouncesCannotEclipse is issue 20's attack: every .torrent
// carries an announce token, and with that one token 300 fake "complete"
// announces in the victim's group used to make every peer handed to the
// victim a fake (and the origin was never handed out, so the victim stalled
// and fell back to the registry). Now only members' signed announces enter
// a swarm: the fakes are refused, or, where the config admits unsigned
// announces, handed out only after every member and the origin. Either way
// what a member receives does not change. Both stores.
func TestForgedAnnouncesCannotEclipse(t *testing.T) {
	join := secret.Generate()
	for name, mk := range storeFactories() {
		for _, allowUnsigned := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/allowUnsigned=%v", name, allowUnsigned), func(t *testing.T) {
				cfg := testConfig()
				cfg.AllowUnsigned = allowUnsigned
				cfg.Cluster.Secret = join
				tt := startTracker(t, cfg, mk(t), "tcp", "127.0.0.1:0")
				h := ih(20)
				u := tt.announceURL(h) + "&group=g"
				originURL := tt.base + "/announce?token=" + tt.keys.Sign(token.PurposeOrigin, h[:], time.Now().Add(time.Hour))
				mustAnnounce(t, originURL, req(h, 100, 5, anatracker.Started))
				// 3 complete members and 7 incomplete ones, all in group g.
				for i := 1; i <= 10; i++ {
					left := int64(10)
					if i <= 3 {
						left = 0
					}
					if _, err := memberAnnounce(t, u, join, fmt.Sprintf("node-%d", i), req(h, i, left, anatracker.Started)); err != nil {
						t.Fatalf("member %d: %v", i, err)
					}
				}
				// anacrolix's client sends no numwant: it goes in the URL.
				victim := func(numwant int) []int {
					t.Helper()
					r := req(h, 50, 10, anatracker.None)
					resp, err := memberAnnounce(t, u+"&numwant="+strconv.Itoa(numwant), join, "node-victim", r)
					if err != nil {
						t.Fatalf("victim: %v", err)
					}
					return ports(resp)
				}
				before := victim(50)
				want := []int{6100, 6001, 6002, 6003, 6004, 6005, 6006, 6007, 6008, 6009, 6010}
				if got := slices.Sorted(slices.Values(before)); !slices.Equal(got, slices.Sorted(slices.Values(want))) {
					t.Fatalf("victim's hand-out before the attack = %v, want the origin and the 10 members", before)
				}
				countsBefore := scrapeOne(t, tt, h)

				// The attack: 300 "complete" announces with the valid token,
				// unsigned, from one host, in the victim's group; and 20
				// more claiming to be member node-1 with a made-up signature.
				for i := 0; i < 300; i++ {
					r := req(h, 1000+i, 0, anatracker.Started)
					r.Port = uint16(20000 + i)
					_, err := clientAnnounce(t, u, r)
					if allowUnsigned != (err == nil) {
						t.Fatalf("forged announce %d: err = %v with allowUnsigned %v", i, err, allowUnsigned)
					}
				}
				for i := 0; i < 20; i++ {
					r := req(h, 2000+i, 0, anatracker.Started)
					r.Port = uint16(30000 + i)
					cl, err := anatracker.NewClient(u, anatracker.NewClientOpts{})
					if err != nil {
						t.Fatal(err)
					}
					_, err = cl.Announce(context.Background(), r, anatracker.AnnounceOpt{HttpRequestDirector: func(hr *http.Request) error {
						hr.Header.Set(announce.HeaderMember, "node-1")
						hr.Header.Set(announce.HeaderSignature, strconv.FormatInt(time.Now().Unix(), 10)+".AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")
						return nil
					}})
					cl.Close()
					if err == nil {
						t.Fatal("announce with a forged member signature accepted")
					}
				}

				// What members receive: the same peers, the origin and the
				// members first, in hand-out order.
				after := victim(50)
				if len(after) < len(want) {
					t.Fatalf("victim's hand-out after the attack = %v", after)
				}
				if lead := slices.Sorted(slices.Values(after[:len(want)])); !slices.Equal(lead, slices.Sorted(slices.Values(want))) {
					t.Fatalf("victim's first %d peers after the attack = %v, want the origin and the 10 members", len(want), after[:len(want)])
				}
				if !allowUnsigned && len(after) != len(want) {
					t.Fatalf("fakes handed out: %v", after)
				}
				// The young swarm (3 seeders) gets the origin first; a small
				// numwant is members and origin only.
				small := victim(5)
				if len(small) != 5 || small[0] != 6100 {
					t.Fatalf("numwant 5 = %v, want the origin first", small)
				}
				for _, p := range small {
					if p >= 20000 {
						t.Fatalf("numwant 5 = %v: a fake among them", small)
					}
				}
				// Member node-1's entry was not taken over by the forgery.
				if !slices.Contains(after, 6001) {
					t.Fatalf("node-1 (port 6001) lost its entry: %v", after)
				}
				if !allowUnsigned {
					if c := scrapeOne(t, tt, h); c != countsBefore {
						t.Fatalf("scrape counts %v after the refused attack, %v before", c, countsBefore)
					}
				}
				m := scrapeMetrics(t, tt.base)
				if !allowUnsigned && !strings.Contains(m, `shoal_tracker_rejected_signatures_total{reason="missing"} 300`) {
					t.Fatalf("unsigned announces not counted:\n%s", grepLines(m, "rejected_signatures"))
				}
				if !strings.Contains(m, `shoal_tracker_rejected_signatures_total{reason="invalid"} 20`) {
					t.Fatalf("forged signatures not counted:\n%s", grepLines(m, "rejected_signatures"))
				}
			})
		}
	}
}

func scrapeOne(t *testing.T, tt *testTracker, h [20]byte) [3]int64 {
	t.Helper()
	q := url.Values{"info_hash": {string(h[:])}, "token": {tt.keys.Sign(token.PurposeAnnounce, h[:], time.Now().Add(time.Hour))}}
	m := rawGet(t, tt.base+"/scrape?"+q.Encode())
	files, _ := m["files"].(map[string]any)
	f, _ := files[string(h[:])].(map[string]any)
	return [3]int64{f["complete"].(int64), f["incomplete"].(int64), f["downloaded"].(int64)}
}
