package cluster

import (
	"crypto/ed25519"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/secret"
)

func authority(t *testing.T, secrets ...string) *Authority {
	t.Helper()
	a, err := NewAuthority(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func issue(t *testing.T, a *Authority, name string) *Identity {
	t.Helper()
	id, err := a.Issue(name, nil)
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestMembersOfTheSameSecretVerifyEachOther(t *testing.T) {
	s := secret.Generate()
	// Two processes derive the authority independently.
	a1, a2 := authority(t, s), authority(t, s)
	id := issue(t, a1, "node-1")
	m, err := a2.Verify(id.Cert.Certificate)
	if err != nil {
		t.Fatal(err)
	}
	if m.Name != "node-1" || !m.Key.Equal(id.Public()) {
		t.Fatalf("member = %+v", m)
	}
	if _, err := authority(t, secret.Generate()).Verify(id.Cert.Certificate); !errors.Is(err, ErrNotMember) {
		t.Fatalf("other cluster accepted the certificate: %v", err)
	}
}

func TestRotation(t *testing.T) {
	old, cur := secret.Generate(), secret.Generate()
	oldID := issue(t, authority(t, old), "old")
	rotating := authority(t, cur, old)
	if _, err := rotating.Verify(oldID.Cert.Certificate); err != nil {
		t.Fatalf("previous secret's member refused while rotating: %v", err)
	}
	newID := issue(t, rotating, "new")
	if _, err := authority(t, old).Verify(newID.Cert.Certificate); err == nil {
		t.Fatal("a member of the new secret only must not be accepted by the old one")
	}
	if _, err := authority(t, cur).Verify(newID.Cert.Certificate); err != nil {
		t.Fatal(err)
	}
}

func TestExpiredCertificate(t *testing.T) {
	a := authority(t, secret.Generate())
	id := issue(t, a, "n")
	// Verified once while valid: the memo of verified certificates must
	// not outlive the certificate.
	if _, err := a.Verify(id.Cert.Certificate); err != nil {
		t.Fatal(err)
	}
	a.now = func() time.Time { return time.Now().Add(leafLifetime + time.Hour) }
	if _, err := a.Verify(id.Cert.Certificate); !errors.Is(err, ErrNotMember) {
		t.Fatalf("expired certificate accepted: %v", err)
	}
}

// A client reconnecting to a member resumes its TLS session, and a resumed
// connection is checked like a new one: a member whose certificate expired
// since the first connection is refused although its session ticket is
// still good.
func TestResumedConnectionsAreVerifiedAgain(t *testing.T) {
	a := authority(t, secret.Generate())
	srv, cli := a.ServerTLS(issue(t, a, "node-1")), a.ClientTLS(issue(t, a, "node-2"), nil)
	var resumed bool
	cli.VerifyConnection = func(next func(tls.ConnectionState) error) func(tls.ConnectionState) error {
		return func(cs tls.ConnectionState) error {
			resumed = cs.DidResume
			return next(cs)
		}
	}(cli.VerifyConnection)

	if err, got := handshake(t, srv, cli); err != nil || got != "piece" || resumed {
		t.Fatalf("first connection: %v %q resumed=%v", err, got, resumed)
	}
	if err, got := handshake(t, srv, cli); err != nil || got != "piece" || !resumed {
		t.Fatalf("second connection: %v %q resumed=%v", err, got, resumed)
	}
	a.now = func() time.Time { return time.Now().Add(leafLifetime + time.Hour) }
	if err, got := handshake(t, srv, cli); !errors.Is(err, ErrNotMember) || got != "" || !resumed {
		t.Fatalf("expired member on a resumed session: %v %q resumed=%v", err, got, resumed)
	}
}

func TestSelfSignedImpostor(t *testing.T) {
	// An attacker who makes its own "authority" with the same name but not
	// the secret.
	a := authority(t, secret.Generate())
	fake := authority(t, secret.Generate())
	id := issue(t, fake, "node-1")
	if _, err := a.Verify(id.Cert.Certificate); !errors.Is(err, ErrNotMember) {
		t.Fatal("impostor accepted")
	}
	if _, err := a.Verify(nil); err == nil {
		t.Fatal("no certificate accepted")
	}
	if _, err := a.Verify([][]byte{[]byte("junk")}); err == nil {
		t.Fatal("junk accepted")
	}
}

// handshake runs one TLS connection over a real loopback socket and returns
// the server's error and what the client read.
func handshake(t *testing.T, server, client *tls.Config) (serverErr error, got string) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	done := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			done <- err
			return
		}
		defer c.Close()
		tc := tls.Server(c, server)
		if err := tc.Handshake(); err != nil {
			done <- err
			return
		}
		_, err = tc.Write([]byte("piece"))
		done <- err
	}()
	c, err := tls.Dial("tcp", l.Addr().String(), client)
	if err == nil {
		b, _ := io.ReadAll(c)
		got = string(b)
		c.Close()
	}
	return <-done, got
}

func TestTLS(t *testing.T) {
	s := secret.Generate()
	a := authority(t, s)
	srv, cli := issue(t, a, "node-1"), issue(t, a, "node-2")
	outsider := issue(t, authority(t, secret.Generate()), "node-3")

	if err, got := handshake(t, a.ServerTLS(srv), a.ClientTLS(cli, nil)); err != nil || got != "piece" {
		t.Fatalf("members: %v %q", err, got)
	}
	if err, got := handshake(t, a.ServerTLS(srv), a.ClientTLS(cli, srv.Public())); err != nil || got != "piece" {
		t.Fatalf("pinned: %v %q", err, got)
	}
	// A client without the secret gets nothing.
	if err, got := handshake(t, a.ServerTLS(srv), a.ClientTLS(outsider, nil)); err == nil || got != "" {
		t.Fatalf("outsider served: %v %q", err, got)
	}
	// A client without any certificate (a bare BitTorrent or HTTP client).
	if err, got := handshake(t, a.ServerTLS(srv), &tls.Config{InsecureSkipVerify: true}); err == nil || got != "" {
		t.Fatalf("anonymous client served: %v %q", err, got)
	}
	// A member that is not the enrolled node.
	if _, got := handshake(t, a.ServerTLS(cli), a.ClientTLS(srv, srv.Public())); got != "" {
		t.Fatal("client talked to a server other than the pinned one")
	}
}

func TestLoadOrCreateKey(t *testing.T) {
	p := filepath.Join(t.TempDir(), "state", "node.key")
	k1, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode %v", fi.Mode())
	}
	k2, err := LoadOrCreateKey(p)
	if err != nil {
		t.Fatal(err)
	}
	if !k1.Equal(k2) {
		t.Fatal("key changed across loads")
	}
	if err := os.WriteFile(p, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadOrCreateKey(p); err == nil {
		t.Fatal("garbage key accepted")
	}
	var _ ed25519.PrivateKey = k1
}
