// Package cluster is what makes a process a member of one Shoal cluster and
// how members recognise each other.
//
// Every member (agents, the registry's seeder, preheat) holds the cluster's
// join secret. From it each derives the same certificate authority: an
// Ed25519 key computed with HKDF from the secret, so there is no CA file to
// distribute and no CA key on disk. Each member then issues itself a
// certificate for its own key (Identity). Connections between members are
// TLS 1.3 with both sides presenting such a certificate, so only holders of
// the join secret are served, the bytes are encrypted, and a member can pin
// another's key (preheat pins each agent's key at enrollment).
//
// Rotation: an Authority may be built from several secrets. It issues with
// the first and accepts certificates of all of them, so members can move to
// a new secret one by one.
package cluster

import (
	"crypto"
	"crypto/ed25519"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// sessionCacheSize is how many members' TLS sessions a client keeps.
const sessionCacheSize = 1024

// caInfo separates the CA key from any other key derived from the same
// secret; v1 lets a future derivation coexist during an upgrade.
const caInfo = "shoal cluster authority v1"

// leafLifetime bounds how long a certificate is accepted. Members reissue at
// every start, so a year only matters for a process that runs that long
// without restart; revocation is rotating the join secret.
const leafLifetime = 365 * 24 * time.Hour

// Authority issues and verifies member certificates.
type Authority struct {
	key   ed25519.PrivateKey
	ca    *x509.Certificate
	roots *x509.CertPool
	now   func() time.Time
	// verified is shared by every configuration the authority makes.
	verified *verifiedCerts
}

// NewAuthority derives the authority from the join secrets, current first.
// The secrets must already have been checked (internal/secret).
func NewAuthority(secrets ...string) (*Authority, error) {
	if len(secrets) == 0 {
		return nil, errors.New("cluster: a join secret is required")
	}
	a := &Authority{roots: x509.NewCertPool(), now: time.Now, verified: &verifiedCerts{}}
	for i, s := range secrets {
		if s == "" {
			return nil, fmt.Errorf("cluster: join secret %d is empty", i)
		}
		seed, err := hkdf.Key(sha256.New, []byte(s), nil, caInfo, ed25519.SeedSize)
		if err != nil {
			return nil, fmt.Errorf("cluster: deriving the authority key: %w", err)
		}
		key := ed25519.NewKeyFromSeed(seed)
		ca, err := caCertificate(key)
		if err != nil {
			return nil, err
		}
		a.roots.AddCert(ca)
		if i == 0 {
			a.key, a.ca = key, ca
		}
	}
	return a, nil
}

// caCertificate is the same for every member holding the secret: fixed
// fields and a deterministic Ed25519 signature.
func caCertificate(key ed25519.PrivateKey) (*x509.Certificate, error) {
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "shoal cluster authority"},
		NotBefore:             time.Date(2020, 1, 1, 0, 0, 0, 0, time.UTC),
		NotAfter:              time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(nil, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, fmt.Errorf("cluster: authority certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// Identity is one member: a name (node id, "registry", "preheat"), its key
// and the certificate the authority issued for them.
type Identity struct {
	Name string
	Key  ed25519.PrivateKey
	Cert tls.Certificate
}

// Public is the member's public key, what others pin.
func (id *Identity) Public() ed25519.PublicKey { return id.Key.Public().(ed25519.PublicKey) }

// Issue makes the certificate of a member. A nil key makes a fresh one (for
// members whose key need not outlive the process).
func (a *Authority) Issue(name string, key ed25519.PrivateKey) (*Identity, error) {
	if key == nil {
		var err error
		if _, key, err = ed25519.GenerateKey(rand.Reader); err != nil {
			return nil, err
		}
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	if err != nil {
		return nil, err
	}
	now := a.now()
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: name},
		NotBefore:    now.Add(-time.Hour), // clock skew between members
		NotAfter:     now.Add(leafLifetime),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, a.ca, key.Public(), a.key)
	if err != nil {
		return nil, fmt.Errorf("cluster: issuing %q: %w", name, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return &Identity{
		Name: name,
		Key:  key,
		Cert: tls.Certificate{Certificate: [][]byte{der}, PrivateKey: crypto.Signer(key), Leaf: leaf},
	}, nil
}

// Member is a verified peer: the name and key its certificate carries.
type Member struct {
	Name string
	Key  ed25519.PublicKey
}

// ErrNotMember is returned for certificates the authority did not issue.
var ErrNotMember = errors.New("cluster: peer is not a member of this cluster")

// Verify checks a certificate (DER, leaf first) against the authority.
func (a *Authority) Verify(chain [][]byte) (Member, error) {
	if len(chain) == 0 {
		return Member{}, fmt.Errorf("%w: no certificate", ErrNotMember)
	}
	leaf, err := x509.ParseCertificate(chain[0])
	if err != nil {
		return Member{}, fmt.Errorf("%w: %v", ErrNotMember, err)
	}
	return a.verifyLeaf(leaf)
}

func (a *Authority) verifyLeaf(leaf *x509.Certificate) (Member, error) {
	now := a.now()
	key := sha256.Sum256(leaf.Raw)
	if m, ok := a.verified.get(key, now); ok {
		return m, nil
	}
	if _, err := leaf.Verify(x509.VerifyOptions{
		Roots:       a.roots,
		CurrentTime: now,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageAny},
	}); err != nil {
		return Member{}, fmt.Errorf("%w: %v", ErrNotMember, err)
	}
	pub, ok := leaf.PublicKey.(ed25519.PublicKey)
	if !ok {
		return Member{}, fmt.Errorf("%w: not an Ed25519 key", ErrNotMember)
	}
	m := Member{Name: leaf.Subject.CommonName, Key: pub}
	a.verified.put(key, m, leaf.NotBefore, leaf.NotAfter)
	return m, nil
}

// verifiedCerts remembers the certificates that passed Verify. A chain
// check is an Ed25519 verification, as costly as the handshake's own
// signature check, and the same few hundred members present the same
// certificates on every connection. The answer depends only on the
// certificate's bytes, the authority's roots (fixed for its lifetime) and
// the time, so a remembered certificate is only re-checked against its own
// validity period.
type verifiedCerts struct {
	mu sync.Mutex
	m  map[[sha256.Size]byte]verifiedCert
}

type verifiedCert struct {
	member              Member
	notBefore, notAfter time.Time
}

// maxVerified bounds the memo: a cluster's members and then some. Past it
// the memo starts over rather than tracking recency (a full handshake is
// the worst case, as without the memo).
const maxVerified = 4096

func (v *verifiedCerts) get(key [sha256.Size]byte, now time.Time) (Member, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	c, ok := v.m[key]
	if !ok || now.Before(c.notBefore) || now.After(c.notAfter) {
		return Member{}, false
	}
	return c.member, true
}

func (v *verifiedCerts) put(key [sha256.Size]byte, m Member, notBefore, notAfter time.Time) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.m == nil || len(v.m) >= maxVerified {
		v.m = make(map[[sha256.Size]byte]verifiedCert)
	}
	v.m[key] = verifiedCert{member: m, notBefore: notBefore, notAfter: notAfter}
}

// ServerTLS is the configuration of a listener only members may use.
func (a *Authority) ServerTLS(id *Identity) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAnyClientCert,
		// Verified here rather than with ClientCAs so that server and client
		// apply the same check (and the same error) to the peer, and in
		// VerifyConnection because it also runs when a session is resumed
		// (VerifyPeerCertificate does not): a resumed member is checked
		// against today's clock and roots like a new one.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := a.PeerMember(cs)
			return err
		},
	}
}

// ClientTLS is the configuration for dialing a member. With pin set, the
// server must also hold exactly that key (a node enrolled earlier); without
// it, any member is accepted. Host names are not checked: members are
// identified by their certificates, and nodes are reached by IP.
//
// The configuration keeps the sessions of the members it reached
// (sessionCacheSize of them): reconnecting to one resumes with a pre-shared
// key instead of signing and verifying certificates again, which is most of
// a handshake's CPU and the bulk of what a swarm spends on connections.
// Use one configuration per client so its connections share the cache.
func (a *Authority) ClientTLS(id *Identity, pin ed25519.PublicKey) *tls.Config {
	return &tls.Config{
		MinVersion:         tls.VersionTLS13,
		Certificates:       []tls.Certificate{id.Cert},
		ClientSessionCache: tls.NewLRUClientSessionCache(sessionCacheSize),
		InsecureSkipVerify: true, // replaced by VerifyConnection below
		VerifyConnection: func(cs tls.ConnectionState) error {
			m, err := a.PeerMember(cs)
			if err != nil {
				return err
			}
			if pin != nil && !pin.Equal(m.Key) {
				return fmt.Errorf("%w: %q presented another key than the one enrolled", ErrNotMember, m.Name)
			}
			return nil
		},
	}
}

// PeerMember returns the verified member on the other end of a TLS
// connection (after its handshake).
func (a *Authority) PeerMember(cs tls.ConnectionState) (Member, error) {
	if len(cs.PeerCertificates) == 0 {
		return Member{}, fmt.Errorf("%w: no certificate", ErrNotMember)
	}
	return a.verifyLeaf(cs.PeerCertificates[0])
}

// LoadOrCreateKey returns the member key kept at path, creating it (0600,
// directory 0700) on first use, so a node keeps its identity across restarts
// and preheat's pin on it holds.
func LoadOrCreateKey(path string) (ed25519.PrivateKey, error) {
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		blk, _ := pem.Decode(b)
		if blk == nil || blk.Type != "PRIVATE KEY" {
			return nil, fmt.Errorf("cluster: %s is not a PEM private key", path)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("cluster: %s: %w", path, err)
		}
		ek, ok := k.(ed25519.PrivateKey)
		if !ok {
			return nil, fmt.Errorf("cluster: %s is not an Ed25519 key", path)
		}
		return ek, nil
	case !errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("cluster: %w", err)
	}
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return nil, fmt.Errorf("cluster: %w", err)
	}
	return key, nil
}
