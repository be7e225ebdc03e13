// Package driver is Shoal's `p2p` storage middleware for distribution.
//
// Wrapped around any storage driver, it makes BitTorrent v1 metainfo for
// every blob (hashing pieces while the blob is uploaded), keeps that metainfo
// beside the blob, and answers blob GETs that ask for
// `Accept: application/x-bittorrent` with a redirect to the blob's torrent
// instead of its bytes. Every other call goes to the wrapped driver unchanged.
package driver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/anacrolix/torrent/bencode"
	"github.com/anacrolix/torrent/metainfo"
	storagedriver "github.com/distribution/distribution/v3/registry/storage/driver"
	storagemiddleware "github.com/distribution/distribution/v3/registry/storage/driver/middleware"
	"github.com/opencontainers/go-digest"
	"github.com/sirupsen/logrus"
	"golang.org/x/sync/singleflight"
)

// MediaTypeTorrent is what participating nodes put in Accept to get a
// blob's torrent instead of its bytes.
const MediaTypeTorrent = "application/x-bittorrent"

// Name is the middleware's name in config.yml.
const Name = "p2p"

func init() {
	if err := storagemiddleware.Register(Name, newMiddleware); err != nil {
		panic(err)
	}
}

// Hook is how the registry process embedding the middleware takes part:
// it learns the driver, hands out torrent URLs and hears of deleted blobs.
type Hook interface {
	// Attach is called once with the middleware when the app is built.
	Attach(d *Driver)
	// TorrentURL returns the signed metadata URL for a torrent request
	// that distribution has already authorized for repo.
	TorrentURL(r *http.Request, repo string, dgst digest.Digest) (string, error)
	// BlobDeleted is called after a blob's data is deleted.
	BlobDeleted(dgst digest.Digest)
}

// Driver is the p2p middleware around a storage driver.
type Driver struct {
	storagedriver.StorageDriver
	opts Options
	lazy singleflight.Group
	log  *logrus.Entry
}

func newMiddleware(ctx context.Context, sd storagedriver.StorageDriver, options map[string]any) (storagedriver.StorageDriver, error) {
	opts, err := ParseOptions(options)
	if err != nil {
		return nil, err
	}
	d := New(sd, opts)
	if opts.Hook != nil {
		opts.Hook.Attach(d)
	}
	return d, nil
}

// New wraps sd. Without opts.Log it logs to logrus's standard logger, as
// distribution's own drivers do.
func New(sd storagedriver.StorageDriver, opts Options) *Driver {
	log := opts.Log
	if log == nil {
		log = logrus.NewEntry(logrus.StandardLogger())
	}
	return &Driver{StorageDriver: sd, opts: opts, log: log.WithField("component", "p2p-driver")}
}

// Writer hashes pieces of upload data as it is written. Other paths pass
// through.
func (d *Driver) Writer(ctx context.Context, p string, appendMode bool) (storagedriver.FileWriter, error) {
	fw, err := d.StorageDriver.Writer(ctx, p, appendMode)
	if err != nil {
		return nil, err
	}
	statePath, ok := uploadStatePath(p)
	if !ok {
		return fw, nil
	}
	h, err := d.resumeHasher(ctx, p, statePath, fw.Size(), appendMode)
	if err != nil {
		// Hashing is an optimisation: the upload must not fail for it. The
		// metainfo is then made lazily from the committed blob.
		d.log.WithError(err).WithField("path", p).Warn("piece hashing disabled for this upload")
		return fw, nil
	}
	return &uploadWriter{FileWriter: fw, d: d, statePath: statePath, h: h}, nil
}

// resumeHasher loads the piece state saved by the upload's previous request.
// When the state lags the data (a crash between writing data and saving
// state, or a registry without Shoal wrote part of the upload), it catches up
// by reading the missing bytes back.
func (d *Driver) resumeHasher(ctx context.Context, dataPath, statePath string, size int64, appendMode bool) (*pieceHasher, error) {
	h := newUploadHasher(d.opts.PieceLength)
	if appendMode {
		if b, err := d.StorageDriver.GetContent(ctx, statePath); err == nil {
			saved := &pieceHasher{}
			if err := saved.UnmarshalBinary(b); err == nil && saved.offset <= size {
				h = saved
			}
		}
	}
	if h.offset == size {
		return h, nil
	}
	r, err := d.StorageDriver.Reader(ctx, dataPath, h.offset)
	if err != nil {
		return nil, fmt.Errorf("read upload to catch up piece hashes: %w", err)
	}
	defer r.Close()
	if _, err := io.CopyN(h, r, size-h.offset); err != nil {
		return nil, fmt.Errorf("read upload to catch up piece hashes: %w", err)
	}
	return h, nil
}

type uploadWriter struct {
	storagedriver.FileWriter
	d         *Driver
	statePath string
	h         *pieceHasher
}

func (w *uploadWriter) Write(p []byte) (int, error) {
	n, err := w.FileWriter.Write(p)
	w.h.Write(p[:n])
	return n, err
}

// Close ends one request of the upload; the state is saved only after the
// data is, so a saved state never claims bytes the storage lacks.
func (w *uploadWriter) Close() error {
	if err := w.FileWriter.Close(); err != nil {
		return err
	}
	w.saveState()
	return nil
}

func (w *uploadWriter) Commit(ctx context.Context) error {
	if err := w.FileWriter.Commit(ctx); err != nil {
		return err
	}
	w.saveState()
	return nil
}

func (w *uploadWriter) saveState() {
	b, err := w.h.MarshalBinary()
	if err == nil {
		// The request context may be done by now; the state must still land.
		err = w.d.StorageDriver.PutContent(context.Background(), w.statePath, b)
	}
	if err != nil {
		w.d.log.WithError(err).WithField("path", w.statePath).Warn("saving piece hash state failed; metainfo will be made lazily")
	}
}

// Move commits an upload into the blob store: after the data is moved, the
// piece hashes gathered during the upload become the blob's metainfo.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	statePath, isUpload := uploadStatePath(src)
	dgst, isBlob := blobDigest(dst)
	var h *pieceHasher
	if isUpload && isBlob {
		if b, err := d.StorageDriver.GetContent(ctx, statePath); err == nil {
			h = &pieceHasher{}
			if h.UnmarshalBinary(b) != nil {
				h = nil
			}
		}
	}
	if err := d.StorageDriver.Move(ctx, src, dst); err != nil {
		return err
	}
	if h == nil {
		return nil
	}
	fi, err := d.StorageDriver.Stat(ctx, dst)
	if err != nil {
		return nil
	}
	if !h.describes(dgst, fi.Size()) {
		// The hashed stream is not the committed blob (concurrent PATCHes,
		// a state from other bytes, a non-sha256 digest): its pieces would
		// be of other bytes. Hash the blob from storage on first need.
		d.log.WithFields(logrus.Fields{"digest": dgst, "size": fi.Size(), "hashed": h.offset}).
			Info("piece hashes made during the upload do not describe the committed blob; making them from storage")
		return nil
	}
	if _, err := d.storeInfo(ctx, dgst, h, fi.Size()); err != nil {
		d.log.WithError(err).WithField("digest", dgst).Warn("storing metainfo failed; it will be made lazily")
	}
	return nil
}

// PutContent is how distribution stores small blobs such as manifests; their
// metainfo is made from the bytes at hand.
func (d *Driver) PutContent(ctx context.Context, p string, content []byte) error {
	if err := d.StorageDriver.PutContent(ctx, p, content); err != nil {
		return err
	}
	if dgst, ok := blobDigest(p); ok {
		h := newPieceHasher(d.opts.PieceLength)
		h.Write(content)
		if _, err := d.storeInfo(ctx, dgst, h, int64(len(content))); err != nil {
			d.log.WithError(err).WithField("digest", dgst).Warn("storing metainfo failed; it will be made lazily")
		}
	}
	return nil
}

// Delete removes the blob's metainfo along with it.
func (d *Driver) Delete(ctx context.Context, p string) error {
	if err := d.StorageDriver.Delete(ctx, p); err != nil {
		return err
	}
	dgst, isData := blobDigest(p)
	if isData {
		// Only the data file was deleted; its sibling metainfo must go too.
		if err := d.StorageDriver.Delete(ctx, metainfoPath(dgst)); err != nil && !isNotFound(err) {
			d.log.WithError(err).WithField("digest", dgst).Warn("deleting metainfo failed")
		}
	} else {
		dgst, isData = blobDirDigest(p)
	}
	if isData && d.opts.Hook != nil {
		d.opts.Hook.BlobDeleted(dgst)
	}
	return nil
}

// RedirectURL sends torrent requests to the blob's metadata. Everything else,
// HEAD included, gets what the wrapped driver gives.
func (d *Driver) RedirectURL(r *http.Request, p string) (string, error) {
	if r != nil && r.Method == http.MethodGet && d.opts.Hook != nil && AcceptsTorrent(r) {
		if dgst, ok := blobDigest(p); ok {
			if repo, ok := repositoryOf(r.URL.Path); ok {
				return d.opts.Hook.TorrentURL(r, repo, dgst)
			}
		}
	}
	return d.StorageDriver.RedirectURL(r, p)
}

// AcceptsTorrent reports whether the request asks for torrent metadata.
func AcceptsTorrent(r *http.Request) bool {
	for _, v := range r.Header.Values("Accept") {
		for _, part := range strings.Split(v, ",") {
			mt, _, _ := strings.Cut(part, ";")
			if strings.EqualFold(strings.TrimSpace(mt), MediaTypeTorrent) {
				return true
			}
		}
	}
	return false
}

// repositoryOf extracts <name> from /v2/<name>/blobs/<digest>.
func repositoryOf(urlPath string) (string, bool) {
	rest, ok := strings.CutPrefix(urlPath, "/v2/")
	if !ok {
		return "", false
	}
	i := strings.LastIndex(rest, "/blobs/")
	if i <= 0 {
		return "", false
	}
	return rest[:i], true
}

// Info returns the bencoded info dictionary of a blob, making and storing it
// first for blobs that predate Shoal (or whose upload state was lost).
// Concurrent callers for one blob share one computation.
func (d *Driver) Info(ctx context.Context, dgst digest.Digest) ([]byte, error) {
	if err := dgst.Validate(); err != nil {
		return nil, err
	}
	b, err := d.StorageDriver.GetContent(ctx, metainfoPath(dgst))
	if err == nil {
		return b, nil
	}
	if !isNotFound(err) {
		return nil, fmt.Errorf("read metainfo of %s: %w", dgst, err)
	}
	v, err, _ := d.lazy.Do(dgst.String(), func() (any, error) {
		return d.makeInfo(context.WithoutCancel(ctx), dgst)
	})
	if err != nil {
		return nil, err
	}
	return v.([]byte), nil
}

func (d *Driver) makeInfo(ctx context.Context, dgst digest.Digest) ([]byte, error) {
	p := blobDataPath(dgst)
	fi, err := d.StorageDriver.Stat(ctx, p)
	if err != nil {
		return nil, err
	}
	r, err := d.StorageDriver.Reader(ctx, p, 0)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	h := newPieceHasher(d.opts.PieceLength)
	if _, err := io.CopyN(h, r, fi.Size()); err != nil {
		return nil, fmt.Errorf("hash blob %s: %w", dgst, err)
	}
	d.log.WithFields(logrus.Fields{"digest": dgst, "size": fi.Size()}).Info("made metainfo for a blob that had none")
	return d.storeInfo(ctx, dgst, h, fi.Size())
}

// storeInfo writes the info dictionary built from the hasher's pieces.
func (d *Driver) storeInfo(ctx context.Context, dgst digest.Digest, h *pieceHasher, size int64) ([]byte, error) {
	b, err := EncodeInfo(dgst, size, h.pieceLength, h.sum())
	if err != nil {
		return nil, err
	}
	if err := d.StorageDriver.PutContent(ctx, metainfoPath(dgst), b); err != nil {
		return nil, fmt.Errorf("store metainfo of %s: %w", dgst, err)
	}
	return b, nil
}

// EncodeInfo is the one place an info dictionary is built, so the infohash of
// a blob depends only on its bytes and the piece length.
func EncodeInfo(dgst digest.Digest, size, pieceLength int64, pieces []byte) ([]byte, error) {
	private := true
	info := metainfo.Info{
		Name:        dgst.Encoded(),
		Length:      size,
		PieceLength: pieceLength,
		Pieces:      pieces,
		Private:     &private,
	}
	b, err := bencode.Marshal(info)
	if err != nil {
		return nil, fmt.Errorf("encode info of %s: %w", dgst, err)
	}
	return b, nil
}

// BlobReader opens a blob's bytes at offset. For the filesystem driver the
// reader is the blob's data file, an *os.File seeked to offset.
func (d *Driver) BlobReader(ctx context.Context, dgst digest.Digest, offset int64) (io.ReadCloser, error) {
	return d.StorageDriver.Reader(ctx, blobDataPath(dgst), offset)
}

// BlobSize returns the size of a blob's bytes.
func (d *Driver) BlobSize(ctx context.Context, dgst digest.Digest) (int64, error) {
	fi, err := d.StorageDriver.Stat(ctx, blobDataPath(dgst))
	if err != nil {
		return 0, err
	}
	return fi.Size(), nil
}

func isNotFound(err error) bool {
	var nf storagedriver.PathNotFoundError
	return errors.As(err, &nf)
}

// IsNotFound reports whether err means the blob does not exist.
func IsNotFound(err error) bool { return isNotFound(err) }
