// Package testenv starts the real programs Shoal's tests drive: the shoal
// binary itself, the upstream registry, redis-server. Everything listens on
// loopback ports chosen here and is stopped by t.Cleanup.
package testenv

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback address with a port nobody listens on now.
func FreeAddr(t testing.TB) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("free port: %v", err)
	}
	defer l.Close()
	return l.Addr().String()
}

var (
	buildOnce sync.Once
	buildPath string
	buildErr  error
)

// ShoalBinary returns the shoal binary: $SHOAL_BIN as built by `make`, or one
// built once per test process so a plain `go test` works too.
func ShoalBinary(t testing.TB) string {
	t.Helper()
	if p := os.Getenv("SHOAL_BIN"); p != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	buildOnce.Do(func() {
		root, err := moduleRoot()
		if err != nil {
			buildErr = err
			return
		}
		dir, err := os.MkdirTemp("", "shoal-bin-")
		if err != nil {
			buildErr = err
			return
		}
		buildPath = filepath.Join(dir, "shoal")
		// By import path, not ./cmd/shoal: modules of their own that
		// replace the shoal module (deploy/grafana, the console's browser
		// test) build the same binary.
		cmd := exec.Command("go", "build", "-o", buildPath, "github.com/shoalproject/shoal/cmd/shoal")
		cmd.Dir = root
		if out, err := cmd.CombinedOutput(); err != nil {
			buildErr = fmt.Errorf("go build ./cmd/shoal: %v\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return buildPath
}

// ToolBinary returns the program named by env (e.g. REGISTRY_BIN), skipping
// the test with a pointer to the make target when it is missing.
func ToolBinary(t testing.TB, env string) string {
	t.Helper()
	p := os.Getenv(env)
	if p == "" {
		t.Skipf("%s not set; run through `make test` (it builds the tool)", env)
	}
	if _, err := os.Stat(p); err != nil {
		t.Skipf("%s=%s: %v; run `make tools`", env, p, err)
	}
	return p
}

func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	mod := strings.TrimSpace(string(out))
	if mod == "" || mod == os.DevNull {
		return "", fmt.Errorf("not inside the shoal module")
	}
	return filepath.Dir(mod), nil
}

// Process is a program started for a test. Its combined output is kept and
// printed if the test fails, so a failing test shows why the program failed.
type Process struct {
	Name string
	cmd  *exec.Cmd
	out  *SyncBuffer
	done chan struct{}
	err  error
}

// SyncBuffer is a bytes.Buffer several goroutines write to (a process's
// stdout and stderr copiers).
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *SyncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Start runs bin with args and stops it when the test ends.
func Start(t testing.TB, name, bin string, args []string, env ...string) *Process {
	t.Helper()
	p := &Process{Name: name, out: &SyncBuffer{}, done: make(chan struct{})}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout = p.out
	p.cmd.Stderr = p.out
	// Own process group, so a test's cleanup also reaches anything it forks.
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.Stop()
		if t.Failed() {
			t.Logf("---- output of %s ----\n%s", name, p.Output())
		}
	})
	return p
}

// Output is everything the process printed so far.
func (p *Process) Output() string { return p.out.String() }

// Exited reports whether the process has ended.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Stop ends the process gracefully, then forcibly after five seconds.
func (p *Process) Stop() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

// Kill ends the process at once, as a crash would.
func (p *Process) Kill() {
	if p.Exited() {
		return
	}
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// WaitHTTP polls url until it answers with a status below 500, or fails the
// test after timeout (or as soon as the process exits).
func WaitHTTP(t testing.TB, p *Process, url string, timeout time.Duration) {
	t.Helper()
	// The wait's deadline bounds each request too: a server that accepts
	// and never answers fails the wait instead of hanging it.
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	WaitFor(t, p, url+" to answer", timeout, func() error { return HTTPAnswers(ctx, http.DefaultClient, url) })
}

// HTTPAnswers is nil when a GET of url through c answers with a status
// below 500: the server is up, whatever it thinks of the request.
func HTTPAnswers(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode >= 500 {
		return fmt.Errorf("status %s", resp.Status)
	}
	return nil
}

// WaitHTTPOK waits for url like WaitHTTP, then fails the test unless a GET
// of it answers 200.
func WaitHTTPOK(t testing.TB, url string, timeout time.Duration) {
	t.Helper()
	WaitHTTP(t, nil, url, timeout)
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s", url, resp.Status)
	}
}

// WaitTCP polls addr until it accepts connections.
func WaitTCP(t testing.TB, p *Process, addr string, timeout time.Duration) {
	t.Helper()
	WaitFor(t, p, addr+" to accept connections", timeout, func() error {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// WaitFor calls ready until it returns nil. It fails the test when p (nil:
// no process to watch) exits first, with p's output, or when timeout has
// passed, with ready's last error; what says what was awaited ("containerd
// to answer").
func WaitFor(t testing.TB, p *Process, what string, timeout time.Duration, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := ready()
		if err == nil {
			return
		}
		if p != nil && p.Exited() {
			t.Fatalf("waiting for %s: %s exited (%v): %v\n%s", what, p.Name, p.err, err, p.Output())
		}
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %s: gave up after %s: %v", what, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// SocketDir is a temporary directory for unix sockets, removed when the
// test ends: a socket's path is limited to 108 bytes, which t.TempDir's
// paths (named after the test) overrun.
func SocketDir(t testing.TB, prefix string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// ContainerdConfig is a config.toml for a containerd 1.x (Debian's) of the
// test's own, beside any on the host: root and state under dir, its API on
// sock, the CRI plugin off (pulls go through ctr).
func ContainerdConfig(dir, sock string) string {
	return fmt.Sprintf(`version = 2
root = %q
state = %q
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = %q
[ttrpc]
  address = %q
`, filepath.Join(dir, "root"), filepath.Join(dir, "state"), sock, sock+".ttrpc")
}

func splitHostPort(addr string) (string, string, error) { return net.SplitHostPort(addr) }
