package agent

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
)

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

type batchPair struct {
	raw    *countingConn // server's socket
	b      *recordBatcher
	server *tls.Conn
	client *tls.Conn
}

// newBatchPair connects a cluster-TLS client to a server whose TLS runs
// over a recordBatcher, over real loopback TCP, handshake done.
func newBatchPair(t *testing.T) *batchPair {
	t.Helper()
	auth, err := cluster.NewAuthority(testClusterSecret)
	if err != nil {
		t.Fatal(err)
	}
	srvID, err := auth.Issue("server", nil)
	if err != nil {
		t.Fatal(err)
	}
	cliID, err := auth.Issue("client", nil)
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			close(accepted)
			return
		}
		accepted <- c
	}()
	cc, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	sc, ok := <-accepted
	if !ok {
		t.Fatal("accept failed")
	}
	p := &batchPair{raw: &countingConn{Conn: sc}}
	p.b = newRecordBatcher(p.raw)
	p.server = tls.Server(p.b, auth.ServerTLS(srvID))
	p.client = tls.Client(cc, auth.ClientTLS(cliID, nil))
	t.Cleanup(func() { p.server.Close(); p.client.Close() })
	errc := make(chan error, 1)
	go func() { errc <- p.server.Handshake() }()
	if err := p.client.Handshake(); err != nil {
		t.Fatalf("client handshake: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("server handshake: %v", err)
	}
	if v := p.server.ConnectionState().Version; v != tls.VersionTLS13 {
		t.Fatalf("version %x, want TLS 1.3", v)
	}
	if len(p.server.ConnectionState().PeerCertificates) == 0 {
		t.Fatal("server saw no client certificate")
	}
	return p
}

// send writes data through w in 256 KiB steps while the client reads it,
// and returns the socket writes it took.
func (p *batchPair) send(t *testing.T, w io.Writer, data []byte) int64 {
	t.Helper()
	before := p.raw.writes.Load()
	got := make(chan []byte, 1)
	go func() {
		b, _ := io.ReadAll(io.LimitReader(p.client, int64(len(data))))
		got <- b
	}()
	for off := 0; off < len(data); off += 256 << 10 {
		if _, err := w.Write(data[off : off+256<<10]); err != nil {
			t.Fatalf("write: %v", err)
		}
	}
	if b := <-got; !bytes.Equal(b, data) {
		t.Fatalf("client got %d bytes, not the %d sent", len(b), len(data))
	}
	return p.raw.writes.Load() - before
}

func TestDataBatcherGathersRecords(t *testing.T) {
	p := newBatchPair(t)
	data := randomBytes(4 << 20)
	plain := p.send(t, p.server, data)
	batched := p.send(t, batchedWriter{p.server, p.b}, data)
	// 4 MiB is 256 records of 16 KiB: one write each without batching,
	// one write per 256 KiB step with it.
	if plain < 256 {
		t.Fatalf("unbatched: %d socket writes, want one per record (≥ 256)", plain)
	}
	if batched > 16 {
		t.Fatalf("batched: %d socket writes, want ≤ 16 (one per step)", batched)
	}
	t.Logf("4 MiB: %d socket writes unbatched, %d batched", plain, batched)
}

// badRecord is an application-data record the server cannot open: its
// read side answers with an alert, written while another goroutine may be
// in a batched write.
func sendBadRecord(t *testing.T, c *tls.Conn) {
	t.Helper()
	rec := append([]byte{23, 3, 3, 0, 32}, bytes.Repeat([]byte{0xAA}, 32)...)
	if _, err := c.NetConn().Write(rec); err != nil {
		t.Fatal(err)
	}
}

func TestDataBatcherHeldAlertLeavesWithFlush(t *testing.T) {
	p := newBatchPair(t)
	p.b.Hold()
	sendBadRecord(t, p.client)
	if _, err := p.server.Read(make([]byte, 1)); err == nil {
		t.Fatal("server read a bad record without error")
	}
	// The alert was written (sendAlert returns before Read does) into the
	// held buffer; Flush must send it.
	if err := p.b.Flush(); err != nil {
		t.Fatal(err)
	}
	p.client.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err := p.client.Read(make([]byte, 1))
	if err == nil || !strings.Contains(err.Error(), "bad record MAC") {
		t.Fatalf("client read: %v, want the server's bad record MAC alert", err)
	}
}

// A read-side alert in the middle of batched writes arrives after the
// records written before it, in order (a reordered or torn record would
// fail the client's decryption instead), and nothing stays behind.
func TestDataBatcherConcurrentReadSideWrite(t *testing.T) {
	p := newBatchPair(t)
	var wg sync.WaitGroup
	wg.Add(2)
	stop := make(chan struct{})
	go func() {
		defer wg.Done()
		w := batchedWriter{p.server, p.b}
		step := randomBytes(256 << 10)
		for {
			select {
			case <-stop:
				return
			default:
			}
			if _, err := w.Write(step); err != nil {
				return
			}
		}
	}()
	go func() {
		defer wg.Done()
		p.server.Read(make([]byte, 1))
	}()
	p.client.SetReadDeadline(time.Now().Add(30 * time.Second))
	if _, err := io.CopyN(io.Discard, p.client, 1<<20); err != nil {
		t.Fatal(err)
	}
	sendBadRecord(t, p.client)
	_, err := io.Copy(io.Discard, p.client)
	close(stop)
	if err == nil || !strings.Contains(err.Error(), "bad record MAC") {
		t.Fatalf("client read: %v, want data then the server's bad record MAC alert", err)
	}
	p.server.Close()
	wg.Wait()
}

// Write deadlines still apply: a held write fails at its Flush, and the
// connection stays failed.
func TestDataBatcherWriteDeadline(t *testing.T) {
	p := newBatchPair(t)
	p.server.SetWriteDeadline(time.Now().Add(-time.Second))
	w := batchedWriter{p.server, p.b}
	_, err := w.Write(randomBytes(256 << 10))
	if !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write past deadline: %v, want deadline exceeded", err)
	}
	p.server.SetWriteDeadline(time.Time{})
	if _, err := w.Write([]byte("x")); err == nil {
		t.Fatal("write after a failed flush succeeded")
	}
}

// Behind the batchListener, net/http still runs the handshake itself and
// fills r.TLS (the data handler's sealed path depends on it), and the
// handler finds its batcher.
func TestDataBatchListenerServesHTTPS(t *testing.T) {
	auth, err := cluster.NewAuthority(testClusterSecret)
	if err != nil {
		t.Fatal(err)
	}
	srvID, _ := auth.Issue("server", nil)
	cliID, _ := auth.Issue("client", nil)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	body := randomBytes(3<<20 + 5)
	srv := &http.Server{
		ConnContext: withBatcher,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || batcherFrom(r.Context()) == nil {
				http.Error(w, "no TLS state or batcher", http.StatusInternalServerError)
				return
			}
			bw := batchedWriter{w, batcherFrom(r.Context())}
			for off := 0; off < len(body); off += 256 << 10 {
				bw.Write(body[off:min(len(body), off+256<<10)])
			}
		}),
	}
	go srv.Serve(newBatchListener(l, auth.ServerTLS(srvID)))
	t.Cleanup(func() { srv.Close() })
	c := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: auth.ClientTLS(cliID, nil)}}
	resp, err := c.Get("https://" + l.Addr().String() + "/")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	got, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("status %d, %d bytes (%.40q), want 200 and the %d bytes", resp.StatusCode, len(got), got, len(body))
	}
	// A client without a cluster certificate still ends in the handshake.
	bare := &http.Client{Timeout: time.Minute, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	if resp, err := bare.Get("https://" + l.Addr().String() + "/"); err == nil {
		resp.Body.Close()
		t.Fatal("a client without a certificate was served")
	}
}
