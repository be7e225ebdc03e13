// Package partial owns a blob while it downloads: the partial file, which
// pieces of it are present, how much of it readers may stream, and its
// sha256.
//
// Every byte of the partial file is written through a Blob, from whatever
// source (other nodes, the registry's share, plain HTTP), so there is one
// answer to "what is in the file": pieces are written whole and only after
// their source checked them, the contiguous prefix of present bytes is what
// clients may stream, and the sha256 of that prefix is computed as it grows,
// on its own goroutine, from the page cache. The last byte is released only
// when the whole blob matched its digest, so no client ever receives a
// complete-looking copy of corrupt data.
package partial

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"math"
	"os"
	"sync"

	"golang.org/x/sys/unix"
)

// ErrDigest is returned (wrapped) when the whole blob does not match its
// digest.
var ErrDigest = errors.New("blob digest mismatch")

// ErrUncheckable is EnsureChecked's answer for a blob without piece hashes
// (a plain stream): only the whole blob's digest can vouch for its bytes.
var ErrUncheckable = errors.New("partial blob: no piece hashes to check a range against")

// Blob is one blob in the making. Create it with Create, describe its
// layout with SetLayout (pieces) or SetSize (a plain stream), write pieces
// or append bytes, and Wait for the verdict.
type Blob struct {
	path string
	want string // sha256 hex
	f    *os.File

	mu      sync.Mutex
	changed chan struct{} // closed and replaced on every state change
	pc      pieceState
	hs      hashState
	err     error // terminal failure
	closed  bool
	resumed bool // the file is an earlier process's, not yet recovered

	// verify checks a piece against its hash (SHA-1 from the torrent), for
	// unchecked pieces a ranged reader needs before the blob is sealed.
	verify func(i int, data []byte) bool
}

// pieceState is what of the file is there (under Blob.mu).
type pieceState struct {
	size     int64  // -1 until known
	pieceLen int64  // 0 until SetLayout
	have     []bool // pieces present
	checked  []bool // pieces present and checked against their SHA-1 (or from a trusted source)
	verified []bool // pieces whose SHA-1 was computed and matched (not only trusted)
	writing  []bool // pieces one writer is writing now
	nhave    int
	prefix   int64 // [0, prefix) is present
}

// hashState is the sha256's progress over the prefix (under Blob.mu, but
// wake).
type hashState struct {
	hashed int64 // [0, hashed) went into the sha256
	sealed bool  // the sha256 of the whole blob matched
	// sum is the sha256 of [0, hashed). Only the hasher writes it; a
	// resumed stream's recovered prefix (RecoverPrefix) replaces it before
	// anything was hashed.
	sum hash.Hash
	// saved is where the last checkpoint of sum was written (StatePath).
	saved int64
	// loopDone is closed when the hasher has ended (and written its last
	// checkpoint).
	loopDone chan struct{}

	wake chan struct{} // the hasher's doorbell (capacity 1)

	// lent are piece buffers their writers handed over (WritePieceLent), so
	// that the hasher need not read back bytes that just arrived. Bounded:
	// a piece far ahead of the hashed prefix is read back later instead.
	lent []lentBuf
}

type lentBuf struct {
	off  int64
	data []byte
	done func() // gives the buffer back; called exactly once
}

const maxLent = 16

// Create makes (truncating) the partial file at path for the blob whose
// sha256 hex digest is want, and starts its hasher, which lives until ctx
// ends or Close.
func Create(ctx context.Context, path, want string) (*Blob, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("create partial blob: %w", err)
	}
	_ = os.Remove(StatePath(path))
	return start(ctx, path, want, f, false), nil
}

func start(ctx context.Context, path, want string, f *os.File, resumed bool) *Blob {
	b := &Blob{path: path, want: want, f: f, changed: make(chan struct{}), pc: pieceState{size: -1}, resumed: resumed,
		hs: hashState{wake: make(chan struct{}, 1), sum: sha256.New(), loopDone: make(chan struct{})}}
	go b.hashLoop(ctx)
	return b
}

// StatePath is where the blob at path keeps the checkpoint of its sha256
// (how far it hashed and the hash's state there), so that a stream without
// piece hashes can continue from its prefix after the download stopped
// (RecoverPrefix). It goes with the blob once it sealed.
func StatePath(path string) string { return path + ".sha256" }

// Resume is Create over the partial file an earlier download left at from
// (the agent killed or stopped mid-download, or the download failed): it
// is moved to path, with its sha256 checkpoint if any, and kept. Nothing
// in it is trusted before it is checked again: once the layout is known
// Recover keeps the pieces whose SHA-1 matches; a stream without piece
// hashes keeps, through RecoverPrefix, the prefix whose bytes hash to the
// checkpoint.
func Resume(ctx context.Context, path, want, from string) (*Blob, error) {
	if err := os.Rename(from, path); err != nil {
		return nil, fmt.Errorf("resume partial blob: %w", err)
	}
	_ = os.Remove(StatePath(path))
	if err := os.Rename(StatePath(from), StatePath(path)); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("resume partial blob: %w", err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0o600)
	if err != nil {
		return nil, fmt.Errorf("resume partial blob: %w", err)
	}
	return start(ctx, path, want, f, true), nil
}

// RecoverPrefix is Recover for a resumed blob without a layout (a plain
// stream, no piece hashes): the prefix its sha256 checkpoint covers is
// hashed again from the file, and kept only if that gives the
// checkpoint's state, so bytes changed or lost on disk since (a torn tail
// after a power cut) are fetched again. What follows the kept prefix is
// dropped from the file. It returns the kept length; call it before
// anything is appended. The whole blob is still checked against its digest
// before it is sealed.
func (b *Blob) RecoverPrefix() (int64, error) {
	b.mu.Lock()
	if !b.resumed || b.pc.pieceLen != 0 || b.pc.prefix > 0 || b.hs.hashed > 0 {
		b.mu.Unlock()
		return 0, nil
	}
	b.resumed = false
	size := b.pc.size
	b.mu.Unlock()
	off, h := b.checkpointed(size)
	if err := b.f.Truncate(off); err != nil {
		return 0, fmt.Errorf("resume partial blob: %w", err)
	}
	if off == 0 {
		return 0, nil
	}
	b.update(func() {
		b.hs.sum, b.hs.hashed, b.hs.saved = h, off, off
		b.pc.prefix = off
	})
	b.ring()
	return off, nil
}

// checkpointed reads the blob's sha256 checkpoint and hashes the file's
// prefix it covers: off is that prefix's length if the file still hashes
// to the checkpoint's state (h then is that hash, ready to go on), else 0.
func (b *Blob) checkpointed(size int64) (off int64, h hash.Hash) {
	raw, err := os.ReadFile(StatePath(b.path))
	if err != nil {
		return 0, nil
	}
	off, state, ok := parseCheckpoint(raw, b.want)
	if !ok || off <= 0 || size >= 0 && off > size {
		return 0, nil
	}
	h = sha256.New()
	if n, err := io.Copy(h, io.NewSectionReader(b.f, 0, off)); err != nil || n != off {
		return 0, nil
	}
	got, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || !bytes.Equal(got, state) {
		return 0, nil
	}
	return off, h
}

// checkpointMagic starts a checkpoint: magic, the blob's digest (hex),
// the hashed length (8 bytes, big-endian), the sha256's state
// (encoding.BinaryMarshaler).
const checkpointMagic = "shoal-sha256-checkpoint-1\n"

// checkpointEvery is how much more of the prefix is hashed before the
// hasher saves its state again (and it does when it stops).
const checkpointEvery = 1 << 20

func appendCheckpoint(dst []byte, want string, off int64, state []byte) []byte {
	dst = append(dst, checkpointMagic...)
	dst = append(dst, want...)
	dst = binary.BigEndian.AppendUint64(dst, uint64(off))
	return append(dst, state...)
}

func parseCheckpoint(raw []byte, want string) (off int64, state []byte, ok bool) {
	rest, ok := bytes.CutPrefix(raw, []byte(checkpointMagic))
	if !ok || len(rest) < len(want)+8 || string(rest[:len(want)]) != want {
		return 0, nil, false
	}
	rest = rest[len(want):]
	n := binary.BigEndian.Uint64(rest)
	if n > math.MaxInt64 {
		return 0, nil, false
	}
	return int64(n), rest[8:], true
}

// checkpoint saves the hasher's state at hashed, replacing the last one
// (atomically: a crash leaves the old or the new). Not synced: the bytes
// it covers are not synced either, and RecoverPrefix checks both agree.
func (b *Blob) checkpoint(h hash.Hash, hashed int64) {
	state, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil || hashed <= 0 {
		return
	}
	p := StatePath(b.path)
	tmp := p + ".tmp"
	if err := os.WriteFile(tmp, appendCheckpoint(nil, b.want, hashed, state), 0o600); err != nil {
		_ = os.Remove(tmp)
		return
	}
	if err := os.Rename(tmp, p); err != nil {
		_ = os.Remove(tmp)
	}
}

// Stop ends the blob with err (unless it sealed or ended already) once
// its hasher caught up with the present prefix (reading back from the page
// cache), and waits for the hasher to stop, which saves its checkpoint
// first: the file and its checkpoint are then at rest, to be kept for a
// later download (Resume) or removed. A hasher that ended already (the
// agent stopping, the blob failed) is not waited for.
func (b *Blob) Stop(err error) {
	for {
		b.mu.Lock()
		caught := b.hs.hashed >= b.pc.prefix
		ch := b.changed
		b.mu.Unlock()
		if caught {
			break
		}
		select {
		case <-ch:
			continue
		case <-b.hs.loopDone:
		}
		break
	}
	b.Fail(err)
	b.ring()
	<-b.hs.loopDone
}

// Recover marks present every piece of a resumed blob whose bytes in the
// file match verify (its SHA-1), after SetLayout, before any piece is
// written; it returns how many. Holes (never written) are skipped without
// reading them. A blob not resumed recovers nothing.
func (b *Blob) Recover(verify func(i int, data []byte) bool) (int, error) {
	b.mu.Lock()
	if !b.resumed || b.pc.pieceLen == 0 || b.pc.nhave > 0 {
		b.mu.Unlock()
		return 0, nil
	}
	b.resumed = false
	pieceLen, size, n := b.pc.pieceLen, b.pc.size, len(b.pc.have)
	b.mu.Unlock()
	if fi, err := b.f.Stat(); err != nil {
		return 0, err
	} else if fi.Size() > size {
		if err := b.f.Truncate(size); err != nil {
			return 0, err
		}
	}
	buf := make([]byte, pieceLen)
	found := 0
	for i := 0; i < n; i++ {
		off := int64(i) * pieceLen
		k := min(pieceLen, size-off)
		if !hasData(b.f, off, k) {
			continue
		}
		m, err := b.f.ReadAt(buf[:k], off)
		if int64(m) < k {
			if err == nil || errors.Is(err, io.EOF) {
				continue // beyond what was written
			}
			return found, fmt.Errorf("read back piece %d: %w", i, err)
		}
		if !verify(i, buf[:k]) {
			continue
		}
		b.update(func() {
			if !b.pc.have[i] {
				b.pc.have[i], b.pc.checked[i], b.pc.verified[i] = true, true, true
				b.pc.nhave++
				b.markPrefixLocked()
			}
		})
		found++
	}
	b.ring()
	return found, nil
}

// hasData reports whether [off, off+n) of f may hold written bytes: false
// when the whole span is a hole (SEEK_DATA finds no data before its end).
func hasData(f *os.File, off, n int64) bool {
	d, err := unix.Seek(int(f.Fd()), off, unix.SEEK_DATA)
	if err != nil {
		return !errors.Is(err, unix.ENXIO) // ENXIO: no data after off
	}
	return d < off+n
}

// Hex is the sha256 the blob must match.
func (b *Blob) Hex() string { return b.want }

// Path is the partial file's path (it is renamed into the cache on commit;
// descriptors opened before stay valid).
func (b *Blob) Path() string { return b.path }

// OpenRead opens a descriptor of the caller's own on the partial file
// (its own offset, for sendfile), valid after the file was renamed.
func (b *Blob) OpenRead() (*os.File, error) {
	f, err := Reopen(b.f)
	if err != nil {
		return nil, fmt.Errorf("open partial blob for reading: %w", err)
	}
	return f, nil
}

// Reopen opens f's file again, read-only, through /proc/self/fd: a new
// open file description with an offset of its own (sendfile moves it), and
// the same file even after it was renamed or unlinked. f must stay open
// meanwhile, or its descriptor number may name another file.
func Reopen(f *os.File) (*os.File, error) {
	return os.Open(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
}

// AppendPresent appends the indexes of the present pieces to dst, under
// one lock (a per-piece Present would take it once per piece).
func (b *Blob) AppendPresent(dst []uint32) []uint32 {
	b.mu.Lock()
	defer b.mu.Unlock()
	for i, ok := range b.pc.have {
		if ok {
			dst = append(dst, uint32(i))
		}
	}
	return dst
}

// Close stops the hasher (which saves its checkpoint first) and closes the
// file. Blocked waiters see an error unless the blob was sealed.
func (b *Blob) Close() error {
	b.update(func() {
		b.closed = true
		if !b.hs.sealed && b.err == nil {
			b.err = errors.New("partial blob closed")
		}
	})
	b.ring()
	<-b.hs.loopDone
	return b.f.Close()
}

func (b *Blob) update(fn func()) {
	b.mu.Lock()
	fn()
	close(b.changed)
	b.changed = make(chan struct{})
	b.mu.Unlock()
}

func (b *Blob) ring() {
	select {
	case b.hs.wake <- struct{}{}:
	default:
	}
}

// SetLayout fixes the size and piece length for piece writes. It may be
// called once (again with the same values is fine).
func (b *Blob) SetLayout(size, pieceLen int64) error {
	if size <= 0 || pieceLen <= 0 {
		return fmt.Errorf("partial blob: invalid layout size=%d pieceLength=%d", size, pieceLen)
	}
	var err error
	b.update(func() {
		switch {
		case b.pc.pieceLen != 0 && (b.pc.pieceLen != pieceLen || b.pc.size != size):
			err = fmt.Errorf("partial blob: layout %d/%d contradicts %d/%d", size, pieceLen, b.pc.size, b.pc.pieceLen)
		case b.pc.size >= 0 && b.pc.size != size:
			err = fmt.Errorf("partial blob: size %d contradicts %d", size, b.pc.size)
		case b.pc.pieceLen == 0:
			b.pc.size, b.pc.pieceLen = size, pieceLen
			b.pc.have = make([]bool, (size+pieceLen-1)/pieceLen)
			b.pc.checked = make([]bool, len(b.pc.have))
			b.pc.verified = make([]bool, len(b.pc.have))
			b.pc.writing = make([]bool, len(b.pc.have))
			b.markPrefixLocked()
		}
	})
	return err
}

// SetSize records the blob's size when only a byte stream is known (plain
// HTTP). A size contradicting an earlier one is an error.
func (b *Blob) SetSize(size int64) error {
	if size < 0 {
		return fmt.Errorf("partial blob: negative size")
	}
	var err error
	b.update(func() {
		if b.pc.size >= 0 && b.pc.size != size {
			err = fmt.Errorf("partial blob sha256:%s: size %d contradicts %d", b.want, size, b.pc.size)
			return
		}
		b.pc.size = size
	})
	b.ring()
	return err
}

// Size is the blob's size, -1 while unknown.
func (b *Blob) Size() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pc.size
}

// NumPieces is the number of pieces (0 without a layout).
func (b *Blob) NumPieces() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.pc.have)
}

// Present reports whether piece i is in the file (checked or not).
func (b *Blob) Present(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return i >= 0 && i < len(b.pc.have) && b.pc.have[i]
}

// Has reports whether piece i is present and known good: checked when it
// arrived, or vouched for by the whole blob's digest. Only such pieces are
// announced and served to other nodes.
func (b *Blob) Has(i int) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return i >= 0 && i < len(b.pc.checked) && (b.pc.checked[i] || b.hs.sealed)
}

// SetVerifier gives the blob the check for single pieces (EnsureChecked).
func (b *Blob) SetVerifier(verify func(i int, data []byte) bool) {
	b.mu.Lock()
	b.verify = verify
	b.mu.Unlock()
}

// EnsureChecked makes sure every present piece overlapping [off, off+n) is
// checked, checking unchecked ones now (read back from the file). A reader
// of a range that ends before the blob does is not protected by the
// held-back last byte: it must receive checked bytes only. A piece that
// fails its check fails the blob.
func (b *Blob) EnsureChecked(off, n int64) error { return b.ensure(off, n, false) }

// EnsureVerified is EnsureChecked for a Range reader: every present piece
// overlapping [off, off+n) has its SHA-1 computed and matched before it is
// sent, those trusted for their source (the registry's) included.
func (b *Blob) EnsureVerified(off, n int64) error { return b.ensure(off, n, true) }

func (b *Blob) ensure(off, n int64, strict bool) error {
	b.mu.Lock()
	if b.hs.sealed || n <= 0 {
		b.mu.Unlock()
		return nil
	}
	if b.pc.pieceLen == 0 || b.verify == nil {
		b.mu.Unlock()
		return ErrUncheckable
	}
	first, last := int(off/b.pc.pieceLen), int((off+n-1)/b.pc.pieceLen)
	var todo []int
	for i := first; i <= last && i < len(b.pc.have); i++ {
		if b.pc.have[i] && (!b.pc.checked[i] || strict && !b.pc.verified[i]) {
			todo = append(todo, i)
		}
	}
	verify, pieceLen, size := b.verify, b.pc.pieceLen, b.pc.size
	b.mu.Unlock()
	for _, i := range todo {
		if verify == nil {
			return fmt.Errorf("partial blob: piece %d unchecked and no way to check it", i)
		}
		po := int64(i) * pieceLen
		data := make([]byte, min(pieceLen, size-po))
		if _, err := b.f.ReadAt(data, po); err != nil {
			return fmt.Errorf("read back piece %d to check it: %w", i, err)
		}
		if !verify(i, data) {
			err := fmt.Errorf("%w: piece %d failed its check", ErrDigest, i)
			b.Fail(err)
			return err
		}
		b.mu.Lock()
		b.pc.checked[i], b.pc.verified[i] = true, true
		b.mu.Unlock()
	}
	return nil
}

// PieceLength is the piece length (0 without a layout).
func (b *Blob) PieceLength() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pc.pieceLen
}

// Unchecked is the number of present pieces nobody checked yet.
func (b *Blob) Unchecked() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	n := 0
	for i, ok := range b.pc.have {
		if ok && !b.pc.checked[i] {
			n++
		}
	}
	return n
}

// Missing returns the indexes of the pieces not present yet.
func (b *Blob) Missing() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	var out []int
	for i, ok := range b.pc.have {
		if !ok {
			out = append(out, i)
		}
	}
	return out
}

// Complete reports whether every byte is present (not yet whether it
// matched the digest: see Wait).
func (b *Blob) Complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pc.size >= 0 && b.pc.prefix == b.pc.size
}

// Prefix is the length of the present prefix.
func (b *Blob) Prefix() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.pc.prefix
}

// PieceBounds returns piece i's offset and length.
func (b *Blob) PieceBounds(i int) (off, n int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	off = int64(i) * b.pc.pieceLen
	return off, min(b.pc.pieceLen, b.pc.size-off)
}

// WritePiece stores piece i. checked says its source checked it (SHA-1
// against the torrent) or is trusted; an unchecked piece is present for
// this node's stream, which the whole blob's sha256 guards, but is not
// offered to other nodes until that digest matched. A piece already present
// is not written again.
func (b *Blob) WritePiece(i int, data []byte, checked bool) error {
	_, err := b.writePiece(i, data, checked, false)
	return err
}

// WritePieceLent is WritePiece for a caller that hands data over: the
// hasher takes the piece's bytes from it instead of reading them back, and
// calls done when it no longer needs data (at once if it cannot use it).
func (b *Blob) WritePieceLent(i int, data []byte, checked bool, done func()) error {
	return b.writePieceLent(i, data, checked, false, done)
}

// WritePieceVerifiedLent is WritePieceLent of a piece whose bytes matched
// its SHA-1: a ranged reader (EnsureVerified) need not hash it again.
func (b *Blob) WritePieceVerifiedLent(i int, data []byte, done func()) error {
	return b.writePieceLent(i, data, true, true, done)
}

func (b *Blob) writePieceLent(i int, data []byte, checked, verified bool, done func()) error {
	wrote, err := b.writePiece(i, data, checked, verified)
	if err != nil || !wrote {
		// Not written by this call: the file may hold other (equal or
		// unchecked) bytes, and the hash must be of the file.
		done()
		return err
	}
	off := int64(i) * b.pc.pieceLen
	b.mu.Lock()
	if off >= b.hs.hashed && len(b.hs.lent) < maxLent && !b.closed && b.err == nil {
		b.hs.lent = append(b.hs.lent, lentBuf{off: off, data: data, done: done})
		b.mu.Unlock()
		b.ring()
		return nil
	}
	b.mu.Unlock()
	done()
	return nil
}

func (b *Blob) writePiece(i int, data []byte, checked, verified bool) (wrote bool, err error) {
	b.mu.Lock()
	if b.err != nil {
		err := b.err
		b.mu.Unlock()
		return false, err
	}
	if i < 0 || i >= len(b.pc.have) {
		b.mu.Unlock()
		return false, fmt.Errorf("partial blob: piece %d out of range", i)
	}
	off := int64(i) * b.pc.pieceLen
	if int64(len(data)) != min(b.pc.pieceLen, b.pc.size-off) {
		b.mu.Unlock()
		return false, fmt.Errorf("partial blob: piece %d has %d bytes", i, len(data))
	}
	// One writer at a time, and never over a present piece: its bytes
	// may be unchecked (guarded by the sha256 alone), and the hasher may
	// hash a lent buffer instead of the file, so a second writer's bytes
	// landing after the first's would seal a blob whose file differs.
	if b.pc.have[i] || b.pc.writing[i] {
		b.mu.Unlock()
		return false, nil
	}
	b.pc.writing[i] = true
	b.mu.Unlock()
	if _, err := b.f.WriteAt(data, off); err != nil {
		b.mu.Lock()
		b.pc.writing[i] = false
		b.mu.Unlock()
		return false, fmt.Errorf("write piece %d: %w", i, err)
	}
	b.update(func() {
		b.pc.writing[i] = false
		if !b.pc.have[i] {
			b.pc.have[i] = true
			b.pc.nhave++
			b.markPrefixLocked()
			wrote = true
			b.pc.verified[i] = verified
		}
		b.pc.checked[i] = b.pc.checked[i] || checked
	})
	b.ring()
	return wrote, nil
}

// markPrefixLocked moves the prefix over present pieces.
func (b *Blob) markPrefixLocked() {
	if b.pc.pieceLen == 0 {
		return
	}
	for i := int(b.pc.prefix / b.pc.pieceLen); i < len(b.pc.have) && b.pc.have[i]; i++ {
		b.pc.prefix = min(int64(i+1)*b.pc.pieceLen, b.pc.size)
	}
}

// Append writes a stream's bytes at off, which must not lie beyond the
// present prefix (plain HTTP, resuming at Prefix). Pieces it completes
// become present.
func (b *Blob) Append(off int64, data []byte) error {
	b.mu.Lock()
	prefix, size, err := b.pc.prefix, b.pc.size, b.err
	b.mu.Unlock()
	switch {
	case err != nil:
		return err
	case off > prefix:
		return fmt.Errorf("partial blob: stream write at %d leaves a gap after %d", off, prefix)
	case size >= 0 && off+int64(len(data)) > size:
		return fmt.Errorf("upstream sent more than %d bytes", size)
	}
	if _, err := b.f.WriteAt(data, off); err != nil {
		return fmt.Errorf("write partial blob: %w", err)
	}
	end := off + int64(len(data))
	b.update(func() {
		b.pc.prefix = max(b.pc.prefix, end)
		if b.pc.pieceLen > 0 {
			for i := int(off / b.pc.pieceLen); i < len(b.pc.have) && min(int64(i+1)*b.pc.pieceLen, b.pc.size) <= b.pc.prefix; i++ {
				if !b.pc.have[i] {
					b.pc.have[i] = true
					b.pc.checked[i] = true // the registry's stream, like its hashes
					b.pc.nhave++
				}
			}
			b.markPrefixLocked()
		}
	})
	b.ring()
	return nil
}

// Fail ends the blob with err (if it has not ended already): waiters and
// readers see it.
func (b *Blob) Fail(err error) {
	b.update(func() {
		if b.err == nil && !b.hs.sealed {
			b.err = err
		}
	})
}

// Readable returns how far readers may stream: the present prefix, minus
// the last byte until the digest matched. ch is closed at the next change.
func (b *Blob) Readable() (end, size int64, sealed bool, err error, ch <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	end = b.pc.prefix
	if !b.hs.sealed && b.pc.size > 0 && end >= b.pc.size {
		end = b.pc.size - 1
	}
	return end, b.pc.size, b.hs.sealed, b.err, b.changed
}

// WaitSize blocks until the size is known or the blob failed.
func (b *Blob) WaitSize(ctx context.Context) (int64, error) {
	for {
		_, size, _, err, ch := b.Readable()
		if err != nil {
			return 0, err
		}
		if size >= 0 {
			return size, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// Wait blocks until the whole blob matched its digest (nil) or failed.
func (b *Blob) Wait(ctx context.Context) error {
	for {
		_, _, sealed, err, ch := b.Readable()
		if sealed {
			return nil
		}
		if err != nil {
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// hashLoop feeds the prefix into the sha256 as it grows — from the buffers
// writers lent it where it can, reading back from the page cache where it
// cannot (pieces that arrived out of order beyond what it keeps, streams) —
// and seals the blob when the whole of it matched.
func (b *Blob) hashLoop(ctx context.Context) {
	defer close(b.hs.loopDone)
	defer b.returnLent(-1)
	var buf []byte // for reading back; most bytes come from lent buffers
	for {
		b.mu.Lock()
		from, to, size, h, done := b.hs.hashed, b.pc.prefix, b.pc.size, b.hs.sum, b.closed || b.err != nil || b.hs.sealed
		saved, err, sealed := b.hs.saved, b.err, b.hs.sealed
		b.mu.Unlock()
		if !sealed && (from-saved >= checkpointEvery || done && from > saved && !errors.Is(err, ErrDigest)) {
			b.checkpoint(h, from)
			b.mu.Lock()
			b.hs.saved = from
			b.mu.Unlock()
		}
		if done {
			return
		}
		b.returnLent(from) // buffers of bytes already hashed
		if from < to {
			lb, next := b.takeLent(from, to)
			if lb != nil {
				h.Write(lb.data)
				lb.done()
				next = from + int64(len(lb.data))
			} else {
				if buf == nil {
					buf = make([]byte, 1<<20)
				}
				n, err := b.hashRange(h, buf, from, next)
				if err != nil {
					// h holds [0, from+n): the checkpoint the next
					// round saves must say so.
					b.mu.Lock()
					b.hs.hashed = from + n
					b.mu.Unlock()
					if !errors.Is(err, errStopped) {
						b.Fail(err)
					}
					continue
				}
			}
			b.update(func() { b.hs.hashed = next }) // Stop may wait for it
			continue
		}
		if size >= 0 && from == size {
			b.seal(h)
			return
		}
		select {
		case <-b.hs.wake:
		case <-ctx.Done():
			b.Fail(ctx.Err()) // the next round saves the checkpoint and ends
		}
	}
}

// takeLent removes and returns the lent buffer starting at from, if it lies
// within [from, to). Otherwise next is where reading back should stop: the
// start of the nearest lent buffer after from, or to.
func (b *Blob) takeLent(from, to int64) (lb *lentBuf, next int64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	next = to
	for k, l := range b.hs.lent {
		switch {
		case l.off == from && from+int64(len(l.data)) <= to:
			b.hs.lent = append(b.hs.lent[:k], b.hs.lent[k+1:]...)
			return &l, 0
		case l.off > from && l.off < next:
			next = l.off
		}
	}
	return nil, next
}

// returnLent gives back the lent buffers of bytes before hashed (all of
// them when hashed < 0).
func (b *Blob) returnLent(hashed int64) {
	b.mu.Lock()
	var back []func()
	keep := b.hs.lent[:0]
	for _, l := range b.hs.lent {
		if hashed < 0 || l.off < hashed {
			back = append(back, l.done)
		} else {
			keep = append(keep, l)
		}
	}
	b.hs.lent = keep
	b.mu.Unlock()
	for _, done := range back {
		done()
	}
}

// errStopped ends a read back when the blob ended meanwhile.
var errStopped = errors.New("partial blob ended")

// hashRange feeds [from, to) of the file into h, stopping early (errStopped)
// if the blob ends meanwhile; n is how much went in.
func (b *Blob) hashRange(h hash.Hash, buf []byte, from, to int64) (n int64, err error) {
	for off := from; off < to; {
		b.mu.Lock()
		stopped := b.closed || b.err != nil
		b.mu.Unlock()
		if stopped {
			return off - from, errStopped
		}
		k := min(int64(len(buf)), to-off)
		if _, err := b.f.ReadAt(buf[:k], off); err != nil {
			return off - from, fmt.Errorf("read back partial blob for hashing: %w", err)
		}
		h.Write(buf[:k])
		off += k
	}
	return to - from, nil
}

func (b *Blob) seal(h hash.Hash) {
	got := hex.EncodeToString(h.Sum(nil))
	_ = os.Remove(StatePath(b.path)) // whole, or wrong: nothing to resume either way
	b.update(func() {
		if got != b.want {
			b.err = fmt.Errorf("%w: want sha256:%s, got sha256:%s; discarded", ErrDigest, b.want, got)
			return
		}
		b.hs.sealed = true
	})
}
