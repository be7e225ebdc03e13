// Package peerid makes the BitTorrent peer IDs of Shoal's two kinds of peer.
// A node tells the registry's seeder (the origin) from other nodes by the
// prefix of the ID it received in the handshake. Nodes take the registry's
// share of a blob over HTTP range requests instead, so a node closes a
// connection from the origin at once, noting only that the tracker has
// answered, and counts only nodes as peers holding pieces.
package peerid

import (
	"crypto/rand"
	"strings"
)

// Azureus-style prefixes: "-" client code, version, "-".
const (
	OriginPrefix = "-SO0001-"
	NodePrefix   = "-SN0001-"
)

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz"

// New returns a 20-byte peer ID with the given prefix and a random tail.
func New(prefix string) string {
	tail := make([]byte, 20-len(prefix))
	rand.Read(tail)
	for i, b := range tail {
		tail[i] = alphabet[int(b)%len(alphabet)]
	}
	return prefix + string(tail)
}

// IsOrigin reports whether id belongs to a registry seeder.
func IsOrigin(id [20]byte) bool {
	return strings.HasPrefix(string(id[:]), OriginPrefix)
}
