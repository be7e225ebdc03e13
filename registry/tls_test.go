package registry

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
)

// selfSigned writes a certificate for 127.0.0.1 and its key, returning
// their paths.
func selfSigned(t *testing.T) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "registry"},
		IPAddresses:  []net.IP{net.ParseIP("127.0.0.1")},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kb, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kb}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func tlsTestConfig(t *testing.T, tlsBlock string) *configuration.Configuration {
	t.Helper()
	cfg, err := configuration.Parse(strings.NewReader(fmt.Sprintf(`version: 0.1
log: {level: warn, accesslog: {disabled: true}}
http:
  addr: 127.0.0.1:0
  secret: %s
  tls: %s
storage:
  inmemory: {}
`, harnessHTTPSecret, tlsBlock)))
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

// http.tls is read as upstream reads it: Serve wraps the listener in TLS
// with the configured floor, and a bad block stops New.
func TestTLS(t *testing.T) {
	cert, key := selfSigned(t)
	s, err := New(tlsTestConfig(t, fmt.Sprintf("{certificate: %q, key: %q, minimumtls: tls1.3}", cert, key)), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	go func() { _ = s.Serve(ctx, l) }()
	t.Cleanup(func() { s.Close() })
	pool := x509.NewCertPool()
	pem, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pem)
	get := func(maxVersion uint16) (*http.Response, error) {
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MaxVersion: maxVersion}}}
		return c.Get("https://" + l.Addr().String() + "/v2/")
	}
	resp, err := get(tls.VersionTLS13)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.TLS == nil || resp.TLS.Version != tls.VersionTLS13 {
		t.Fatalf("GET /v2/ over TLS: %d %+v", resp.StatusCode, resp.TLS)
	}
	if resp, err := get(tls.VersionTLS12); err == nil {
		resp.Body.Close()
		t.Fatal("a TLS 1.2 client got through minimumtls: tls1.3")
	}

	for block, want := range map[string]string{
		fmt.Sprintf("{certificate: %q, key: %q, minimumtls: tls1.0}", cert, key):                                        "minimumtls",
		fmt.Sprintf("{certificate: %q, key: %q, ciphersuites: [NOPE]}", cert, key):                                      "NOPE",
		fmt.Sprintf("{certificate: %q, key: %q}", cert, cert):                                                           "http.tls",
		fmt.Sprintf("{certificate: %q, key: %q, clientcas: [%q], clientauth: require-any-client-cert}", cert, key, key): "clientcas",
	} {
		if _, err := New(tlsTestConfig(t, block), Deps{}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("http.tls %s: New = %v, want an error naming %s", block, err, want)
		}
	}
}
