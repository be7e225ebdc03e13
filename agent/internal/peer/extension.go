package peer

import (
	"encoding/binary"
	"fmt"
	"time"

	"github.com/anacrolix/torrent"
	pp "github.com/anacrolix/torrent/peer_protocol"
)

// shoalExtension is the BitTorrent extension (BEP 10) Shoal nodes speak
// among themselves, next to the standard wire that anacrolix keeps for
// membership and piece availability. Payload: one op byte, then
//   - opClaim, opRelease: big-endian uint32 piece indexes this node starts
//     (or stopped) fetching from the registry, because BitTorrent says which
//     pieces a peer has, not which it is fetching;
//   - opData, opDataAsk: a big-endian uint16, the port of this node's data
//     listener, where it serves the pieces it has over HTTP (see
//     data.go); opDataAsk also asks for the receiver's port, for a
//     node that has not heard it (the greeting can be lost while a
//     connection's extension IDs are being set up).
const shoalExtension pp.ExtensionName = "shoal_claim"

const (
	opClaim   = 'c'
	opRelease = 'r'
	opData    = 'd'
	opDataAsk = 'D'
)

// maxClaimsPerMessage bounds what one message may carry: a blob of
// MaxBlobBytes in the smallest pieces allowed.
const maxClaimsPerMessage = 1 << 20

func encodeClaims(op byte, pieces []int) []byte {
	b := make([]byte, 1, 1+4*len(pieces))
	b[0] = op
	for _, i := range pieces {
		b = binary.BigEndian.AppendUint32(b, uint32(i))
	}
	return b
}

func encodeDataPort(op byte, port int) []byte {
	return binary.BigEndian.AppendUint16([]byte{op}, uint16(port))
}

// decodeExtension parses a message of the extension: claims or releases
// (pieces) or a data port.
func decodeExtension(b []byte) (op byte, pieces []int, port int, err error) {
	if len(b) < 1 {
		return 0, nil, 0, fmt.Errorf("empty %s message", shoalExtension)
	}
	switch b[0] {
	case opData, opDataAsk:
		if len(b) != 3 {
			return 0, nil, 0, fmt.Errorf("malformed %s data-port message (%d bytes)", shoalExtension, len(b))
		}
		port = int(binary.BigEndian.Uint16(b[1:]))
		if port == 0 {
			return 0, nil, 0, fmt.Errorf("%s data-port message with port 0", shoalExtension)
		}
		return b[0], nil, port, nil
	case opClaim, opRelease:
		if (len(b)-1)%4 != 0 || (len(b)-1)/4 > maxClaimsPerMessage {
			return 0, nil, 0, fmt.Errorf("malformed %s message (%d bytes)", shoalExtension, len(b))
		}
		for off := 1; off < len(b); off += 4 {
			pieces = append(pieces, int(binary.BigEndian.Uint32(b[off:])))
		}
		return b[0], pieces, 0, nil
	default:
		return 0, nil, 0, fmt.Errorf("unknown %s op %q", shoalExtension, b[0])
	}
}

// Extension is the extension's name, for peers of other implementations
// (tests) that speak it.
const Extension = shoalExtension

// EncodeDataPort is the message telling a node where this one serves
// pieces.
func EncodeDataPort(port int) []byte { return encodeDataPort(opData, port) }

// SendExtension sends a message of the extension, retrying for up to a
// second while the peer's extension IDs are not recorded yet.
func SendExtension(pc *torrent.PeerConn, msg []byte) {
	for range 50 {
		if pc.WriteExtendedMessage(shoalExtension, msg) == nil {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}
