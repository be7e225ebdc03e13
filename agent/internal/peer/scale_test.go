package peer

import (
	"net"
	"sync/atomic"
	"testing"

	"golang.org/x/sys/unix"
)

// A torrent is forming while connections are dialled, or while nodes the
// tracker named wait for a dial and the torrent has room; nodes beyond
// the cap wait for good and must not hold settling (issue 20).
func TestStillForming(t *testing.T) {
	tests := []struct {
		name                            string
		pending, halfOpen, active, want int
	}{
		{"nothing named", 0, 0, 0, 0},
		{"dialling", 0, 3, 10, 1},
		{"named, room to connect", 5, 0, 10, 1},
		{"named beyond the cap", 27, 0, 200, 0},
		{"dialling at the cap", 27, 1, 199, 1},
		{"all connected", 0, 0, 127, 0},
	}
	for _, tt := range tests {
		if got := stillForming(tt.pending, tt.halfOpen, tt.active, 200); got != (tt.want == 1) {
			t.Errorf("%s: stillForming(%d, %d, %d) = %v", tt.name, tt.pending, tt.halfOpen, tt.active, got)
		}
	}
}

// The data listener's connections get the small send buffer that keeps
// an upload slot held while its piece crosses the link.
func TestDataSendBuffer(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	var accepted atomic.Int64
	sl := sendBufferListener{Listener: l, n: &accepted}
	go func() {
		if c, err := net.Dial("tcp", l.Addr().String()); err == nil {
			defer c.Close()
			var b [1]byte
			_, _ = c.Read(b[:])
		}
	}()
	c, err := sl.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	raw, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var got int
	var serr error
	if err := raw.Control(func(fd uintptr) { got, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	// Linux doubles what is set, for its bookkeeping.
	if got != DataSendBuffer && got != 2*DataSendBuffer {
		t.Errorf("SO_SNDBUF = %d, want %d (or doubled)", got, DataSendBuffer)
	}
	if n := accepted.Load(); n != 1 {
		t.Errorf("counted %d accepted connections, want 1", n)
	}
}
