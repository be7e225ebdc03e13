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

// sigEncoding is strict unpadded base64url: Strict refuses non-zero
// trailing bits (the other final characters of one signature); CR and LF,
// which every Go base64 decoder skips, are refused by parse.
var sigEncoding = base64.RawURLEncoding.Strict()

// Sign returns a token for subject that expires at expiry. The token is
// URL-safe: "<unix expiry>.<base64url mac>", and it is the only spelling
// Verify accepts for that expiry and signature.
func (k *Keys) Sign(purpose string, subject []byte, expiry time.Time) string {
	exp := expiry.Unix()
	return format(exp, mac(k.secrets[0], purpose, subject, exp))
}

// format is the one spelling of a token: the expiry in canonical decimal
// (no sign, no leading zero) and the signature in strict base64url.
func format(exp int64, sig []byte) string {
	return strconv.FormatInt(exp, 10) + "." + sigEncoding.EncodeToString(sig)
}

// parse splits a token, accepting only the spelling format produces: a
// token has exactly one accepted form, so caches, logs and replay checks
// keyed by the token string cannot be fooled by another spelling.
func parse(tok string) (int64, []byte, error) {
	expStr, sigStr, ok := strings.Cut(tok, ".")
	if !ok || len(expStr) == 0 || len(expStr) > 19 || len(sigStr) != sigLen {
		return 0, nil, ErrMalformed
	}
	for i := 0; i < len(expStr); i++ {
		if expStr[i] < '0' || expStr[i] > '9' || (i == 0 && expStr[i] == '0') {
			return 0, nil, ErrMalformed
		}
	}
	exp, err := strconv.ParseInt(expStr, 10, 64)
	if err != nil {
		return 0, nil, ErrMalformed
	}
	if strings.ContainsAny(sigStr, "\r\n") {
		return 0, nil, ErrMalformed
	}
	sig, err := sigEncoding.DecodeString(sigStr)
	if err != nil || len(sig) != sha256.Size {
		return 0, nil, ErrMalformed
	}
	return exp, sig, nil
}

// sigLen is the length of an encoded HMAC-SHA256.
var sigLen = base64.RawURLEncoding.EncodedLen(sha256.Size)

// Expiry is the expiry tok claims. Only meaningful for a token Verify
// accepted (it checks nothing).
func Expiry(tok string) (time.Time, bool) {
	exp, _, err := parse(tok)
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
	exp, sig, err := parse(tok)
	if err != nil {
		return err
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
