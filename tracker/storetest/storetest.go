// Package storetest is the suite every tracker.Store implementation
// passes: the in-memory and Redis stores run it from the tracker's tests,
// and a new store (another database) runs it from its own:
//
//	func TestStore(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) tracker.Store {
//			s := newMyStore(t)
//			t.Cleanup(func() { s.Close() })
//			return s
//		})
//	}
//
// It checks behaviour through the Store interface only (what an announce
// returns, what scrape and the listing count), at fixed times passed as
// now, so it needs no clock and works against stores shared by replicas.
package storetest

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/shoalproject/shoal/tracker"
)

// Run runs the suite. newStore returns a fresh, empty store for one subtest
// and arranges its Close (t.Cleanup); every subtest gets its own, so one
// failure does not leak into the next. Stores that implement tracker.Lister
// also run the listing subtest; others skip it.
func Run(t *testing.T, newStore func(t *testing.T) tracker.Store) {
	ctx := context.Background()
	t0 := time.Unix(1_800_000_000, 0)
	ttl := time.Minute
	announce := func(t *testing.T, s tracker.Store, now time.Time, h [20]byte, p tracker.Peer, mod func(*tracker.AnnounceInput)) tracker.Swarm {
		t.Helper()
		in := tracker.AnnounceInput{InfoHash: h, Peer: p, TTL: ttl, Sample: 10}
		if mod != nil {
			mod(&in)
		}
		sw, err := s.Announce(ctx, now, in)
		if err != nil {
			t.Fatalf("announce: %v", err)
		}
		return sw
	}
	ids := func(ps []tracker.Peer) map[[20]byte]tracker.Peer {
		m := map[[20]byte]tracker.Peer{}
		for _, p := range ps {
			m[p.ID] = p
		}
		return m
	}
	cases := []struct {
		name string
		run  func(t *testing.T, s tracker.Store)
	}{
		{"first peer sees nobody, second sees first but not itself", func(t *testing.T, s tracker.Store) {
			sw := announce(t, s, t0, ih(1), peerN(1, tracker.ClassIncomplete), nil)
			if len(sw.Candidates) != 0 || sw.Incomplete != 1 || sw.Complete != 0 {
				t.Fatalf("first announce: %+v", sw)
			}
			sw = announce(t, s, t0, ih(1), peerN(2, tracker.ClassIncomplete), nil)
			got := ids(sw.Candidates)
			if len(got) != 1 || got[pid(1)].Addr != peerN(1, 0).Addr || sw.Incomplete != 2 {
				t.Fatalf("second announce: %+v", sw)
			}
		}},
		{"record round trip keeps class, IPv6 address and group", func(t *testing.T, s tracker.Store) {
			p := tracker.Peer{ID: pid(7), Addr: netip.MustParseAddrPort("[::1]:7777"), Class: tracker.ClassOrigin, Group: "zone-a"}
			announce(t, s, t0, ih(2), p, nil)
			sw := announce(t, s, t0, ih(2), peerN(8, tracker.ClassIncomplete), nil)
			if len(sw.Candidates) != 1 || sw.Candidates[0] != p {
				t.Fatalf("got %+v, want %+v", sw.Candidates, p)
			}
			if sw.Complete != 1 || sw.Incomplete != 1 {
				t.Fatalf("origin must count as complete: %+v", sw.Counts)
			}
		}},
		{"completed moves a peer to seeders and counts a download", func(t *testing.T, s tracker.Store) {
			announce(t, s, t0, ih(3), peerN(1, tracker.ClassIncomplete), nil)
			sw := announce(t, s, t0, ih(3), peerN(1, tracker.ClassComplete), func(in *tracker.AnnounceInput) { in.Completed = true })
			if sw.Complete != 1 || sw.Incomplete != 0 || sw.Downloaded != 1 {
				t.Fatalf("after completed: %+v", sw.Counts)
			}
			sw = announce(t, s, t0, ih(3), peerN(2, tracker.ClassIncomplete), nil)
			if c := ids(sw.Candidates)[pid(1)]; c.Class != tracker.ClassComplete {
				t.Fatalf("peer 1 class = %v", c.Class)
			}
		}},
		{"stopped removes at once", func(t *testing.T, s tracker.Store) {
			announce(t, s, t0, ih(4), peerN(1, tracker.ClassComplete), nil)
			announce(t, s, t0, ih(4), peerN(2, tracker.ClassIncomplete), nil)
			sw := announce(t, s, t0, ih(4), peerN(1, tracker.ClassComplete), func(in *tracker.AnnounceInput) { in.Stopped = true })
			if sw.Complete != 0 || sw.Incomplete != 1 {
				t.Fatalf("after stopped: %+v", sw.Counts)
			}
			sw = announce(t, s, t0, ih(4), peerN(3, tracker.ClassIncomplete), nil)
			if _, ok := ids(sw.Candidates)[pid(1)]; ok {
				t.Fatal("stopped peer still handed out")
			}
		}},
		{"peer expires after its TTL, refresh keeps it", func(t *testing.T, s tracker.Store) {
			announce(t, s, t0, ih(5), peerN(1, tracker.ClassIncomplete), nil)
			announce(t, s, t0, ih(5), peerN(2, tracker.ClassIncomplete), nil)
			// Peer 2 refreshes half-way; peer 1 does not.
			announce(t, s, t0.Add(ttl/2), ih(5), peerN(2, tracker.ClassIncomplete), nil)
			sw := announce(t, s, t0.Add(ttl+time.Second), ih(5), peerN(3, tracker.ClassIncomplete), nil)
			got := ids(sw.Candidates)
			if _, ok := got[pid(1)]; ok || sw.Incomplete != 2 {
				t.Fatalf("expired peer 1 still present: %+v", sw)
			}
			if _, ok := got[pid(2)]; !ok {
				t.Fatalf("refreshed peer 2 missing: %+v", sw)
			}
			c, err := s.Scrape(ctx, t0.Add(3*ttl), [][20]byte{ih(5)})
			if err != nil || c[0].Incomplete != 0 {
				t.Fatalf("scrape after all expired: %+v %v", c, err)
			}
		}},
		{"sample is a budget filled in hand-out class order, origin on top, requester excluded", func(t *testing.T, s tracker.Store) {
			for i := 1; i <= 30; i++ {
				c := tracker.ClassIncomplete
				if i%2 == 0 {
					c = tracker.ClassComplete
				}
				announce(t, s, t0, ih(6), peerN(i, c), nil)
			}
			announce(t, s, t0, ih(6), peerN(99, tracker.ClassOrigin), nil)
			for _, tc := range []struct{ sample, complete, origin, incomplete int }{
				{4, 4, 1, 0}, {15, 15, 1, 0}, {16, 15, 1, 1}, {20, 15, 1, 5}, {100, 15, 1, 14},
			} {
				sw := announce(t, s, t0, ih(6), peerN(1, tracker.ClassIncomplete), func(in *tracker.AnnounceInput) { in.Sample = tc.sample })
				per := map[tracker.Class]int{}
				for _, p := range sw.Candidates {
					per[p.Class]++
					if p.ID == pid(1) {
						t.Fatal("requester in candidates")
					}
				}
				if per[tracker.ClassComplete] != tc.complete || per[tracker.ClassOrigin] != tc.origin || per[tracker.ClassIncomplete] != tc.incomplete {
					t.Fatalf("sample %d: got %v, want complete/origin/incomplete %d/%d/%d", tc.sample, per, tc.complete, tc.origin, tc.incomplete)
				}
				if sw.Complete != 16 || sw.Incomplete != 15 {
					t.Fatalf("counts %+v", sw.Counts)
				}
			}
			sw := announce(t, s, t0, ih(6), peerN(1, tracker.ClassIncomplete), func(in *tracker.AnnounceInput) { in.Sample = 0 })
			if len(sw.Candidates) != 0 {
				t.Fatalf("sample 0 returned %d", len(sw.Candidates))
			}
		}},
		{"swarms are isolated and scrape reports each", func(t *testing.T, s tracker.Store) {
			announce(t, s, t0, ih(7), peerN(1, tracker.ClassComplete), nil)
			announce(t, s, t0, ih(8), peerN(2, tracker.ClassIncomplete), nil)
			announce(t, s, t0, ih(8), peerN(3, tracker.ClassIncomplete), nil)
			c, err := s.Scrape(ctx, t0, [][20]byte{ih(7), ih(8), ih(99)})
			if err != nil {
				t.Fatal(err)
			}
			want := []tracker.Counts{{Complete: 1}, {Incomplete: 2}, {}}
			for i := range want {
				if c[i] != want[i] {
					t.Errorf("scrape[%d] = %+v, want %+v", i, c[i], want[i])
				}
			}
		}},
		{"concurrent announces all land (batched pipelines for redis)", func(t *testing.T, s tracker.Store) {
			var wg sync.WaitGroup
			errs := make(chan error, 300)
			for i := 0; i < 300; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					h := ih(20 + byte(i%3))
					_, err := s.Announce(ctx, t0, tracker.AnnounceInput{InfoHash: h, Peer: peerN(i, tracker.ClassIncomplete), TTL: ttl, Sample: 5})
					errs <- err
				}(i)
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				if err != nil {
					t.Fatal(err)
				}
			}
			c, err := s.Scrape(ctx, t0, [][20]byte{ih(20), ih(21), ih(22)})
			if err != nil {
				t.Fatal(err)
			}
			for i, cc := range c {
				if cc.Incomplete != 100 {
					t.Errorf("swarm %d has %d peers, want 100", i, cc.Incomplete)
				}
			}
		}},
		{"re-announce from the same IP on a new port replaces the peer", func(t *testing.T, s tracker.Store) {
			p := peerN(1, tracker.ClassIncomplete)
			announce(t, s, t0, ih(10), p, nil)
			p.Addr = netip.AddrPortFrom(p.Addr.Addr(), 7000)
			p.Group = "zone-b"
			announce(t, s, t0, ih(10), p, nil)
			sw := announce(t, s, t0, ih(10), peerN(2, tracker.ClassIncomplete), nil)
			if len(sw.Candidates) != 1 || sw.Candidates[0] != p || sw.Incomplete != 2 {
				t.Fatalf("got %+v (counts %+v), want only %+v", sw.Candidates, sw.Counts, p)
			}
			// And it expires with its latest record, leaving nothing behind.
			sw = announce(t, s, t0.Add(2*ttl), ih(10), peerN(3, tracker.ClassIncomplete), nil)
			if len(sw.Candidates) != 0 || sw.Incomplete != 1 {
				t.Fatalf("after expiry: %+v", sw)
			}
		}},
		{"a forged peer_id from another IP neither replaces nor stops the owner's entry", func(t *testing.T, s tracker.Store) {
			victim := peerN(1, tracker.ClassComplete)
			announce(t, s, t0, ih(11), victim, nil)
			forged := tracker.Peer{ID: victim.ID, Addr: netip.MustParseAddrPort("127.0.0.66:9999"), Class: tracker.ClassComplete, Group: "evil"}
			announce(t, s, t0, ih(11), forged, nil)
			sw := announce(t, s, t0, ih(11), peerN(2, tracker.ClassIncomplete), nil)
			addrs := map[netip.AddrPort]tracker.Peer{}
			for _, p := range sw.Candidates {
				addrs[p.Addr] = p
			}
			if addrs[victim.Addr] != victim || len(addrs) != 2 || sw.Complete != 2 {
				t.Fatalf("after the forged announce: %+v (counts %+v), want the victim unchanged beside the forger's own entry", sw.Candidates, sw.Counts)
			}
			// The forger's stop removes its own entry, not the victim's.
			announce(t, s, t0, ih(11), forged, func(in *tracker.AnnounceInput) { in.Stopped = true })
			sw = announce(t, s, t0, ih(11), peerN(3, tracker.ClassIncomplete), nil)
			if len(sw.Candidates) != 2 || sw.Complete != 1 {
				t.Fatalf("after the forged stop: %+v (counts %+v)", sw.Candidates, sw.Counts)
			}
			for _, p := range sw.Candidates {
				if p.ID == victim.ID && p != victim {
					t.Fatalf("victim's entry changed to %+v", p)
				}
			}
			if _, ok := ids(sw.Candidates)[victim.ID]; !ok {
				t.Fatalf("forged stop removed the victim: %+v", sw.Candidates)
			}
			// The owner's own stop still works.
			announce(t, s, t0, ih(11), victim, func(in *tracker.AnnounceInput) { in.Stopped = true })
			sw = announce(t, s, t0, ih(11), peerN(3, tracker.ClassIncomplete), nil)
			if _, ok := ids(sw.Candidates)[victim.ID]; ok || sw.Complete != 0 {
				t.Fatalf("owner's stop ignored: %+v", sw.Candidates)
			}
		}},
		{"an IPv4 peer seen through a dual-stack listener is the same peer", func(t *testing.T, s tracker.Store) {
			p := peerN(1, tracker.ClassIncomplete)
			announce(t, s, t0, ih(12), p, nil)
			mapped := p
			mapped.Addr = netip.AddrPortFrom(netip.AddrFrom16(p.Addr.Addr().As16()), p.Addr.Port())
			announce(t, s, t0, ih(12), mapped, func(in *tracker.AnnounceInput) { in.Stopped = true })
			sw := announce(t, s, t0, ih(12), peerN(2, tracker.ClassIncomplete), nil)
			if len(sw.Candidates) != 0 || sw.Incomplete != 1 {
				t.Fatalf("stop from the mapped address left %+v", sw)
			}
		}},
		{"a member has one entry per swarm and address, whatever peer id and port it announces with", func(t *testing.T, s tracker.Store) {
			m := peerN(1, tracker.ClassIncomplete)
			m.Member = "node-1"
			announce(t, s, t0, ih(13), m, nil)
			m2 := peerN(2, tracker.ClassComplete) // restarted: new peer id, port and class
			m2.Addr = netip.AddrPortFrom(m.Addr.Addr(), 7777)
			m2.Member = "node-1"
			announce(t, s, t0, ih(13), m2, nil)
			sw := announce(t, s, t0, ih(13), peerN(3, tracker.ClassIncomplete), nil)
			if sw.Complete != 1 || sw.Incomplete != 1 || len(sw.Candidates) != 1 {
				t.Fatalf("after a member re-announced under a new id: %+v", sw)
			}
			if c := sw.Candidates[0]; c.ID != m2.ID || c.Addr != m2.Addr || c.Class != tracker.ClassComplete {
				t.Fatalf("member entry = %+v, want the latest announce %+v", c, m2)
			}
			// The same node id from another address is another entry (two
			// nodes configured alike do not displace each other).
			other := peerN(4, tracker.ClassIncomplete)
			other.Member = "node-1"
			sw = announce(t, s, t0, ih(13), other, nil)
			if sw.Complete != 1 || sw.Incomplete != 2 {
				t.Fatalf("same member from another address: %+v", sw.Counts)
			}
			announce(t, s, t0, ih(13), other, func(in *tracker.AnnounceInput) { in.Stopped = true })
			// A stop under the member's name removes its entry.
			m2.ID = pid(9)
			announce(t, s, t0, ih(13), m2, func(in *tracker.AnnounceInput) { in.Stopped = true })
			sw = announce(t, s, t0, ih(13), peerN(3, tracker.ClassIncomplete), nil)
			if sw.Complete != 0 || len(sw.Candidates) != 0 {
				t.Fatalf("after the member stopped: %+v", sw)
			}
		}},
		{"unverified peers count as incomplete and are sampled after every member", func(t *testing.T, s tracker.Store) {
			for i := 1; i <= 20; i++ {
				announce(t, s, t0, ih(14), peerN(i, tracker.ClassUnverified), nil)
			}
			for i := 21; i <= 23; i++ {
				m := peerN(i, tracker.ClassIncomplete)
				m.Member = fmt.Sprintf("node-%d", i)
				announce(t, s, t0, ih(14), m, nil)
			}
			sw := announce(t, s, t0, ih(14), peerN(99, tracker.ClassIncomplete), func(in *tracker.AnnounceInput) { in.Sample = 5 })
			per := map[tracker.Class]int{}
			for _, p := range sw.Candidates {
				per[p.Class]++
			}
			if per[tracker.ClassIncomplete] != 3 || per[tracker.ClassUnverified] != 2 || sw.Incomplete != 24 || sw.Complete != 0 {
				t.Fatalf("sample 5 of 3 members and 20 unverified: %v, counts %+v", per, sw.Counts)
			}
		}},
		{"a large swarm samples exactly the budget, distinct and live", func(t *testing.T, s tracker.Store) {
			for i := 1; i <= 300; i++ {
				announce(t, s, t0, ih(15), peerN(i, tracker.ClassComplete), nil)
			}
			// Half of them expire.
			for i := 1; i <= 150; i++ {
				announce(t, s, t0.Add(ttl/2), ih(15), peerN(i, tracker.ClassComplete), nil)
			}
			for range 5 {
				sw := announce(t, s, t0.Add(ttl+time.Second), ih(15), peerN(1, tracker.ClassComplete), func(in *tracker.AnnounceInput) { in.Sample = 40 })
				got := ids(sw.Candidates)
				if len(sw.Candidates) != 40 || len(got) != 40 {
					t.Fatalf("sample 40 of 149 live others: %d candidates, %d distinct", len(sw.Candidates), len(got))
				}
				for id := range got {
					var n int
					fmt.Sscanf(string(id[8:]), "%d", &n)
					if n < 1 || n > 150 || id == pid(1) {
						t.Fatalf("sampled %q: expired or the requester", id)
					}
				}
				if sw.Complete != 150 {
					t.Fatalf("complete = %d, want the 150 live", sw.Complete)
				}
			}
		}},
		{"stopped on an unknown swarm is harmless", func(t *testing.T, s tracker.Store) {
			sw := announce(t, s, t0, ih(9), peerN(1, tracker.ClassIncomplete), func(in *tracker.AnnounceInput) { in.Stopped = true })
			if sw.Complete+sw.Incomplete != 0 {
				t.Fatalf("%+v", sw)
			}
		}},
		{"the listing counts live peers per class, busiest swarm first", func(t *testing.T, s tracker.Store) {
			l, ok := s.(tracker.Lister)
			if !ok {
				t.Skipf("%T does not implement tracker.Lister", s)
			}
			ann := func(now time.Time, h [20]byte, p tracker.Peer, ttl time.Duration, stopped bool) {
				t.Helper()
				if _, err := s.Announce(ctx, now, tracker.AnnounceInput{InfoHash: h, Peer: p, TTL: ttl, Stopped: stopped, Completed: p.Class == tracker.ClassComplete}); err != nil {
					t.Fatal(err)
				}
			}
			// Swarm 1: origin + 2 complete + 1 incomplete. Swarm 2: one
			// incomplete. Swarm 3: one peer that stops. Swarm 4: a peer
			// with a short TTL that expires.
			ann(t0, ih(1), peerN(1, tracker.ClassOrigin), time.Minute, false)
			ann(t0, ih(1), peerN(2, tracker.ClassComplete), time.Minute, false)
			ann(t0, ih(1), peerN(3, tracker.ClassComplete), time.Minute, false)
			ann(t0, ih(1), peerN(4, tracker.ClassIncomplete), time.Minute, false)
			ann(t0, ih(2), peerN(5, tracker.ClassIncomplete), time.Minute, false)
			ann(t0, ih(3), peerN(6, tracker.ClassIncomplete), time.Minute, false)
			ann(t0, ih(3), peerN(6, tracker.ClassIncomplete), time.Minute, true)
			ann(t0, ih(4), peerN(7, tracker.ClassIncomplete), 10*time.Second, false)

			got, err := l.Swarms(ctx, t0.Add(20*time.Second), 10)
			if err != nil {
				t.Fatal(err)
			}
			want := []tracker.SwarmInfo{
				{InfoHash: ih(1), Complete: 2, Origin: 1, Incomplete: 1, Downloaded: 2},
				{InfoHash: ih(2), Incomplete: 1},
			}
			if !slices.Equal(got, want) {
				t.Fatalf("swarms = %+v, want %+v", got, want)
			}
			got, err = l.Swarms(ctx, t0.Add(20*time.Second), 1)
			if err != nil || len(got) != 1 || got[0].InfoHash != ih(1) {
				t.Fatalf("limit 1: %+v, %v", got, err)
			}
			// Past every TTL nothing is listed.
			got, err = l.Swarms(ctx, t0.Add(2*time.Minute), 10)
			if err != nil || len(got) != 0 {
				t.Fatalf("after expiry: %+v, %v", got, err)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := newStore(t)
			if err := s.Ping(ctx); err != nil {
				t.Fatalf("ping: %v", err)
			}
			tc.run(t, s)
		})
	}
}

func ih(n byte) (h [20]byte) {
	h[0], h[19] = n, n
	return
}

func pid(n int) (id [20]byte) {
	copy(id[:], fmt.Sprintf("-SH0001-%012d", n))
	return
}

func peerN(n int, c tracker.Class) tracker.Peer {
	return tracker.Peer{ID: pid(n), Addr: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, byte(n)}), uint16(6000+n)), Class: c}
}
