package driver

import (
	"path"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Shoal keeps its files inside distribution's own layout so that nothing else
// needs to know about them:
//
//   - metainfo sits beside the blob it describes, blobs/<alg>/<hh>/<hex>/torrent.
//     The blob enumerator only looks at files named "data", so registry:3 and
//     `registry garbage-collect` skip it, and GC's delete of the blob directory
//     removes it with the blob;
//   - the piece-hash state of an upload sits in the upload's directory,
//     _uploads/<id>/p2p/pieces, which commit, cancel and the upload purger all
//     remove as a whole.
const (
	rootPrefix    = "/docker/registry/v2"
	blobsPrefix   = rootPrefix + "/blobs/"
	metainfoName  = "torrent"
	pieceStateRel = "p2p/pieces"
)

// blobDigest returns the digest of a blob's data path
// (/docker/registry/v2/blobs/sha256/ab/abcd…/data).
func blobDigest(p string) (digest.Digest, bool) {
	rest, ok := strings.CutPrefix(p, blobsPrefix)
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 4 || parts[3] != "data" || !strings.HasPrefix(parts[2], parts[1]) {
		return "", false
	}
	d := digest.NewDigestFromEncoded(digest.Algorithm(parts[0]), parts[2])
	if d.Validate() != nil {
		return "", false
	}
	return d, true
}

// blobDirDigest returns the digest of a blob directory path
// (/docker/registry/v2/blobs/sha256/ab/abcd…), the path GC deletes.
func blobDirDigest(p string) (digest.Digest, bool) {
	return blobDigest(p + "/data")
}

// blobDataPath is the inverse of blobDigest.
func blobDataPath(d digest.Digest) string {
	enc := d.Encoded()
	return path.Join(blobsPrefix, d.Algorithm().String(), enc[:2], enc, "data")
}

// metainfoPath is where the bencoded info dictionary of a blob is kept.
func metainfoPath(d digest.Digest) string {
	return path.Join(path.Dir(blobDataPath(d)), metainfoName)
}

// uploadStatePath returns where the piece state of an upload data path
// (/docker/registry/v2/repositories/<name>/_uploads/<id>/data) is kept.
func uploadStatePath(p string) (string, bool) {
	if !strings.HasPrefix(p, rootPrefix+"/repositories/") || path.Base(p) != "data" {
		return "", false
	}
	dir := path.Dir(p)
	if path.Base(path.Dir(dir)) != "_uploads" {
		return "", false
	}
	return path.Join(dir, pieceStateRel), true
}
