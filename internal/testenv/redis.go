package testenv

import (
	"os/exec"
	"testing"
	"time"
)

// Redis is a real redis-server on a loopback port, persistence off. Tests
// may Kill and Restart it to exercise outages; the address stays the same.
type Redis struct {
	Addr string
	t    testing.TB
	bin  string
	proc *Process
}

// StartRedis starts redis-server for the test. `make test` installs the
// package when it is missing; a plain `go test` without it skips.
func StartRedis(t testing.TB) *Redis {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed; `make test` installs it")
	}
	r := &Redis{Addr: FreeAddr(t), t: t, bin: bin}
	r.Restart()
	return r
}

// Kill stops the server abruptly.
func (r *Redis) Kill() { r.proc.Kill() }

// Restart starts the server again on the same address (empty: persistence
// is off, as a restarted cache would be).
func (r *Redis) Restart() {
	r.t.Helper()
	_, port, _ := splitHostPort(r.Addr)
	r.proc = Start(r.t, "redis-server", r.bin, []string{
		"--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
		"--protected-mode", "no",
	})
	WaitTCP(r.t, r.proc, r.Addr, 10*time.Second)
}
