// Package announce signs a cluster member's tracker announces and checks
// them, so the tracker can tell members from holders of a torrent's announce
// token. The token is in every .torrent and proves only that the holder may
// announce; the signature proves the announce comes from a holder of the
// join secret, and names the member.
//
// The signature is an HMAC-SHA256 over the member name, a timestamp and the
// announce's raw query (infohash, peer id, port, left, event, group, token:
// everything the tracker stores), keyed with a key derived from the join
// secret by HKDF. An HMAC rather than the member's Ed25519 certificate (as
// heartbeats to preheat carry): the cluster's certificate authority is
// itself derived from the join secret, so any holder can issue a
// certificate for any name and a certificate proves no more than the HMAC
// does; and a tracker verifies tens of thousands of announces a second,
// where an HMAC costs about a microsecond and a certificate chain plus an
// Ed25519 signature about a hundred times that.
package announce

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Headers of a signed announce.
const (
	HeaderMember    = "Shoal-Member"
	HeaderSignature = "Shoal-Announce-Signature" // "<unix seconds>.<base64url HMAC>"
)

// keyInfo separates this key from every other key derived from the join
// secret (the cluster authority's among them).
const keyInfo = "shoal tracker announce v1"

// MaxMemberLen bounds the member name (a node id): it is stored with the
// peer and hashed per announce.
const MaxMemberLen = 128

// Errors of Verify; callers count them apart.
var (
	ErrUnsigned  = errors.New("announce not signed")
	ErrMalformed = errors.New("announce signature malformed")
	ErrInvalid   = errors.New("announce signature invalid")
	ErrStale     = errors.New("announce signature timestamp out of range")
)

func deriveKey(secret string) ([]byte, error) {
	if secret == "" {
		return nil, errors.New("announce: empty join secret")
	}
	k, err := hkdf.Key(sha256.New, []byte(secret), nil, keyInfo, sha256.Size)
	if err != nil {
		return nil, fmt.Errorf("announce: deriving the key: %w", err)
	}
	return k, nil
}

func sum(key []byte, member, ts, rawQuery string) []byte {
	m := hmac.New(sha256.New, key)
	writeSigned(m, member, ts, rawQuery)
	return m.Sum(nil)
}

// writeSigned writes the signed message: the member's length first so no
// two (member, timestamp) pairs share an encoding.
func writeSigned(h hash.Hash, member, ts, rawQuery string) {
	h.Write([]byte(strconv.Itoa(len(member))))
	h.Write([]byte{':'})
	h.Write([]byte(member))
	h.Write([]byte{'\n'})
	h.Write([]byte(ts))
	h.Write([]byte{'\n'})
	h.Write([]byte(rawQuery))
}

// Signer signs one member's announces.
type Signer struct {
	key    []byte
	member string
	now    func() time.Time
}

// NewSigner returns the signer of member (its node id) under the current
// join secret.
func NewSigner(joinSecret, member string) (*Signer, error) {
	if member == "" || len(member) > MaxMemberLen {
		return nil, fmt.Errorf("announce: member name must be 1 to %d bytes", MaxMemberLen)
	}
	k, err := deriveKey(joinSecret)
	if err != nil {
		return nil, err
	}
	return &Signer{key: k, member: member, now: time.Now}, nil
}

// Sign adds the member's signature to an announce request. Its signature
// is anacrolix's ClientConfig.HttpRequestDirector, which sees each tracker
// request after its query is final.
func (s *Signer) Sign(r *http.Request) error {
	ts := strconv.FormatInt(s.now().Unix(), 10)
	r.Header.Set(HeaderMember, s.member)
	r.Header.Set(HeaderSignature, ts+"."+base64.RawURLEncoding.EncodeToString(sum(s.key, s.member, ts, r.URL.RawQuery)))
	return nil
}

// Director is the one line an anacrolix client needs:
//
//	cfg.HttpRequestDirector = announce.Director(joinSecret, nodeID)
//
// It signs every tracker request as member; with an unusable secret or
// name, every announce fails with the reason (the client logs it) instead
// of going out unsigned.
func Director(joinSecret, member string) func(*http.Request) error {
	s, err := NewSigner(joinSecret, member)
	if err != nil {
		return func(*http.Request) error { return err }
	}
	return s.Sign
}

// Verifier checks announces against the join secrets, current first; the
// previous ones are accepted while the secret rotates.
type Verifier struct {
	keys    [][]byte
	maxSkew time.Duration
}

// NewVerifier accepts signatures of any of secrets whose timestamp is
// within maxSkew of the verifier's clock.
func NewVerifier(maxSkew time.Duration, secrets ...string) (*Verifier, error) {
	if len(secrets) == 0 {
		return nil, errors.New("announce: a join secret is required")
	}
	v := &Verifier{maxSkew: maxSkew}
	for _, s := range secrets {
		k, err := deriveKey(s)
		if err != nil {
			return nil, err
		}
		v.keys = append(v.keys, k)
	}
	return v, nil
}

// Verify returns the member that signed an announce with headers h and
// query rawQuery, or why it cannot be trusted. An announce with neither
// header is ErrUnsigned.
func (v *Verifier) Verify(h http.Header, rawQuery string, now time.Time) (string, error) {
	member, sig := headerValue(h, HeaderMember), headerValue(h, HeaderSignature)
	if member == "" && sig == "" {
		return "", ErrUnsigned
	}
	if member == "" || len(member) > MaxMemberLen {
		return "", ErrMalformed
	}
	ts, mac, ok := strings.Cut(sig, ".")
	if !ok {
		return "", ErrMalformed
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil {
		return "", ErrMalformed
	}
	got, err := base64.RawURLEncoding.DecodeString(mac)
	if err != nil || len(got) != sha256.Size {
		return "", ErrMalformed
	}
	valid := false
	for _, k := range v.keys {
		if hmac.Equal(got, sum(k, member, ts, rawQuery)) {
			valid = true
			break
		}
	}
	if !valid {
		return "", ErrInvalid
	}
	if d := now.Sub(time.Unix(unix, 0)); d > v.maxSkew || d < -v.maxSkew {
		return "", ErrStale
	}
	return member, nil
}

// headerValue reads a header without canonicalising its name per request:
// the constants above are canonical already.
func headerValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}
