// Package token mints and checks short, expiring HMAC tokens bound to a
// subject (an infohash, a repository+digest pair, ...).
//
// The registry hands such tokens out (in torrent metadata URLs and in tracker
// announce URLs) and whoever later receives them (the registry's metadata
// endpoint, the tracker) verifies them without any shared state but a secret.
// Several secrets may be configured so a secret can be rotated: the first one
// signs, every one verifies.
package token

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Purposes of the tokens Shoal hands out. The registry signs announce and
// origin tokens over a torrent's raw 20-byte infohash; the tracker verifies
// them and ranks an origin (the registry's own seeder) apart from peers.
const (
	PurposeAnnounce = "announce"
	PurposeOrigin   = "origin"
)

// Errors returned by Verify. They are distinct so callers can count them
// separately; none of them reveals anything about the secret.
var (
	ErrMissing   = errors.New("token missing")
	ErrMalformed = errors.New("token malformed")
	ErrExpired   = errors.New("token expired")
	ErrInvalid   = errors.New("token signature invalid")
)

// Keys signs with its first secret and verifies with all of them.
type Keys struct {
	secrets [][]byte
}

// NewKeys returns Keys for the given secrets, in order of preference. Empty
// secrets are rejected: an empty HMAC key would make every token forgeable.
func NewKeys(secrets ...string) (*Keys, error) {
	k := &Keys{}
	for i, s := range secrets {
		if s == "" {
			return nil, fmt.Errorf("token: secret %d is empty", i)
		}
		k.secrets = append(k.secrets, []byte(s))
	}
	if len(k.secrets) == 0 {
		return nil, errors.New("token: at least one secret is required")
	}
	return k, nil
}

// Sign returns a token for subject that expires at expiry. The token is
// URL-safe: "<unix expiry>.<base64url mac>".
func (k *Keys) Sign(purpose string, subject []byte, expiry time.Time) string {
	exp := expiry.Unix()
	return strconv.FormatInt(exp, 10) + "." + base64.RawURLEncoding.EncodeToString(mac(k.secrets[0], purpose, subject, exp))
}

// Expiry is the expiry tok claims. Only meaningful for a token Verify
// accepted (it checks nothing).
func Expiry(tok string) (time.Time, bool) {
	expStr, _, ok := strings.Cut(tok, ".")
	if !ok {
		return time.Time{}, false
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		return time.Time{}, false
	}
	return time.Unix(exp, 0), true
}

// Verify checks that tok was signed by one of the secrets for exactly this
// purpose and subject, and has not expired at now.
func (k *Keys) Verify(purpose string, subject []byte, tok string, now time.Time) error {
	if tok == "" {
		return ErrMissing
	}
	expStr, sigStr, ok := strings.Cut(tok, ".")
	if !ok {
		return ErrMalformed
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		return ErrMalformed
	}
	sig, err := base64.RawURLEncoding.DecodeString(sigStr)
	if err != nil || len(sig) != sha256.Size {
		return ErrMalformed
	}
	// Check the signature before the expiry so a forged token is reported as
	// forged, whatever expiry it claims.
	valid := false
	for _, s := range k.secrets {
		if hmac.Equal(sig, mac(s, purpose, subject, exp)) {
			valid = true
			break
		}
	}
	if !valid {
		return ErrInvalid
	}
	if now.Unix() > exp {
		return ErrExpired
	}
	return nil
}

// mac binds the purpose, the subject and the expiry with length prefixes so
// no two distinct (purpose, subject) pairs share an encoding.
func mac(secret []byte, purpose string, subject []byte, exp int64) []byte {
	h := hmac.New(sha256.New, secret)
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(purpose)))
	h.Write(n[:])
	h.Write([]byte(purpose))
	binary.BigEndian.PutUint64(n[:], uint64(len(subject)))
	h.Write(n[:])
	h.Write(subject)
	binary.BigEndian.PutUint64(n[:], uint64(exp))
	h.Write(n[:])
	return h.Sum(nil)
}
