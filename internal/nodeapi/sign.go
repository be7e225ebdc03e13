package nodeapi

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/cluster"
)

// Headers of a signed request.
const (
	HeaderCertificate = "Shoal-Node-Certificate" // base64 DER, leaf first, comma-separated
	HeaderTimestamp   = "Shoal-Timestamp"        // Unix nanoseconds
	HeaderSignature   = "Shoal-Signature"        // base64 Ed25519 signature
)

// signContext separates these signatures from anything else the node key
// might ever sign.
const signContext = "shoal-node-request-v1"

// maxChainCerts and maxCertHeader bound what is parsed before the chain is
// verified.
const (
	maxChainCerts = 4
	maxCertHeader = 16 << 10
)

// ErrUnauthenticated is the error of every verification failure.
var ErrUnauthenticated = errors.New("request not authenticated")

func signedMessage(method, path, ts string, body []byte) []byte {
	sum := sha256.Sum256(body)
	return []byte(signContext + "\n" + method + "\n" + path + "\n" + ts + "\n" + hex.EncodeToString(sum[:]))
}

// Sign adds the identity's certificate chain, now and a signature over
// method, path, timestamp and body to h.
func Sign(h http.Header, id *cluster.Identity, method, path string, body []byte, now time.Time) {
	certs := make([]string, 0, len(id.Cert.Certificate))
	for _, der := range id.Cert.Certificate {
		certs = append(certs, base64.StdEncoding.EncodeToString(der))
	}
	ts := strconv.FormatInt(now.UnixNano(), 10)
	h.Set(HeaderCertificate, strings.Join(certs, ","))
	h.Set(HeaderTimestamp, ts)
	h.Set(HeaderSignature, base64.StdEncoding.EncodeToString(ed25519.Sign(id.Key, signedMessage(method, path, ts, body))))
}

// Verify checks a signed request: the certificate was issued by the
// cluster authority, the signature over method, path, timestamp and body
// is the certificate key's, and the timestamp is within maxSkew of now. It
// returns the member (its name is the node id the certificate carries) and
// the timestamp, which the caller compares with the last one it accepted
// from that member to refuse replays.
func Verify(auth *cluster.Authority, h http.Header, method, path string, body []byte, now time.Time, maxSkew time.Duration) (cluster.Member, time.Time, error) {
	fail := func(format string, a ...any) (cluster.Member, time.Time, error) {
		return cluster.Member{}, time.Time{}, fmt.Errorf("%w: %s", ErrUnauthenticated, fmt.Sprintf(format, a...))
	}
	raw := h.Get(HeaderCertificate)
	if raw == "" {
		return fail("no %s header", HeaderCertificate)
	}
	if len(raw) > maxCertHeader {
		return fail("%s larger than %d bytes", HeaderCertificate, maxCertHeader)
	}
	parts := strings.Split(raw, ",")
	if len(parts) > maxChainCerts {
		return fail("more than %d certificates", maxChainCerts)
	}
	chain := make([][]byte, 0, len(parts))
	for _, p := range parts {
		der, err := base64.StdEncoding.DecodeString(strings.TrimSpace(p))
		if err != nil {
			return fail("%s is not base64", HeaderCertificate)
		}
		chain = append(chain, der)
	}
	m, err := auth.Verify(chain)
	if err != nil {
		return fail("certificate not issued by this cluster's authority")
	}
	ts := h.Get(HeaderTimestamp)
	n, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || n <= 0 {
		return fail("missing or malformed %s", HeaderTimestamp)
	}
	sig, err := base64.StdEncoding.DecodeString(h.Get(HeaderSignature))
	if err != nil || len(sig) != ed25519.SignatureSize {
		return fail("missing or malformed %s", HeaderSignature)
	}
	if !ed25519.Verify(m.Key, signedMessage(method, path, ts, body), sig) {
		return fail("bad signature")
	}
	at := time.Unix(0, n)
	if d := now.Sub(at); d > maxSkew || d < -maxSkew {
		return fail("timestamp %s is more than %s from this server's clock", at.UTC().Format(time.RFC3339), maxSkew)
	}
	return m, at, nil
}
