package cluster

import (
	"crypto/tls"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/secret"
)

// BenchmarkHandshake is one member connecting to another over loopback,
// both ends' CPU included: what every peer-wire and data connection costs
// before its first byte.
func BenchmarkHandshake(b *testing.B) {
	a, err := NewAuthority(secret.Generate())
	if err != nil {
		b.Fatal(err)
	}
	srvID, _ := a.Issue("node-1", nil)
	cliID, _ := a.Issue("node-2", nil)
	cases := []struct {
		name   string
		resume bool
		curves []tls.CurveID
	}{
		{"full", false, nil},
		{"full-x25519", false, []tls.CurveID{tls.X25519}},
		{"resumed", true, nil},
		{"resumed-x25519", true, []tls.CurveID{tls.X25519}},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			srv, cli := a.ServerTLS(srvID), a.ClientTLS(cliID, nil)
			srv.CurvePreferences, cli.CurvePreferences = c.curves, c.curves
			if !c.resume {
				cli.ClientSessionCache = nil
			}
			l, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				b.Fatal(err)
			}
			defer l.Close()
			go func() {
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					go func() {
						tc := tls.Server(c, srv)
						if tc.Handshake() == nil {
							tc.Write([]byte{1})
						}
						tc.Close()
					}()
				}
			}()
			resumed := 0
			cpu0 := cpuTime(b)
			b.ResetTimer()
			for b.Loop() {
				c, err := tls.Dial("tcp", l.Addr().String(), cli)
				if err != nil {
					b.Fatal(err)
				}
				var one [1]byte
				if _, err := c.Read(one[:]); err != nil {
					b.Fatal(err)
				}
				if c.ConnectionState().DidResume {
					resumed++
				}
				c.Close()
			}
			b.StopTimer()
			// Both ends run in this process: CPU per connection made, which
			// unlike wall time means something on a busy machine.
			b.ReportMetric(float64((cpuTime(b)-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			b.ReportMetric(float64(resumed)/float64(b.N), "resumed/op")
		})
	}
}

func cpuTime(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
