package origin

import (
	"context"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/shoalproject/shoal/agent/internal/partial"
	"github.com/shoalproject/shoal/agent/swarm"
)

// Key names a download: the same digest from two upstreams is two
// downloads, so that bytes one upstream sends never reach a client of the
// other before they matched the digest.
type Key struct{ Base, Hex string }

// Flights are the downloads in progress, one per Key (single flight).
type Flights struct {
	mu sync.Mutex
	m  map[Key]*Flight
}

// NewFlights makes an empty set.
func NewFlights() *Flights { return &Flights{m: map[Key]*Flight{}} }

// Flight is one in-progress download shared by every requester of the blob
// on one upstream. Its bytes and their state belong to Blob; the flight
// adds who is waiting, whose credentials it may use, and the outcome.
type Flight struct {
	Key  Key
	Blob *partial.Blob
	// Size is the blob's size as the upstream gave it before the
	// download (HEAD, or the control request), -1 if it gave none;
	// torrents and bodies must agree with it.
	Size int64
	// Wants are the pieces the flight's Range readers wait for; its
	// engine fetches them first.
	Wants   *swarm.Wants
	flights *Flights
	done    chan struct{} // closed once committed or failed
	// retired: nobody joins from then on (Retire); the set drops it
	// when it next looks it up.
	retired atomic.Bool

	mu   sync.Mutex
	err  error
	refs int
	who  requesters
	// Set by Finish, before done closes; read after it.
	finished finished
}

// finished is what Finish records of a committed blob.
type finished struct {
	release func()
	outcome Outcome
}

// requesters are the credentials of the requesters attached now, each
// checked with the upstream before it joined; cur is the one the download
// uses, replaced by another attached requester's when the upstream refuses
// it (expired token, a starter with bad credentials). Nobody's credentials
// outlive their requester, except cur while in use.
type requesters struct {
	creds   []*Cred
	cur     *Cred
	refused map[Cred]bool
}

// Outcome is where a committed blob's bytes came from.
type Outcome struct {
	Source                  string // p2p or http
	FromPeers, FromRegistry int64
}

// Join attaches a requester with credentials c to the download of key, or
// starts it: create makes its partial blob, and started tells the caller
// to run it (Run). leave detaches the requester; call it when done.
func (fs *Flights) Join(key Key, c Cred, size int64, create func() (*partial.Blob, error)) (f *Flight, leave func(), started bool, err error) {
	cred := &c
	fs.mu.Lock()
	defer fs.mu.Unlock()
	if f, ok := fs.live(key); ok {
		f.mu.Lock()
		f.refs++
		f.who.creds = append(f.who.creds, cred)
		f.mu.Unlock()
		return f, func() { f.leave(cred) }, false, nil
	}
	b, err := create()
	if err != nil {
		return nil, nil, false, err
	}
	f = &Flight{Key: key, Blob: b, Size: size, Wants: swarm.NewWants(nil), flights: fs, done: make(chan struct{}), refs: 2,
		who: requesters{creds: []*Cred{cred}, cur: cred, refused: map[Cred]bool{}}}
	fs.m[key] = f
	return f, func() { f.leave(cred) }, true, nil
}

// live is key's flight if it is joinable; a retired one leaves the set.
// Call with fs.mu held.
func (fs *Flights) live(key Key) (*Flight, bool) {
	f, ok := fs.m[key]
	if ok && f.retired.Load() {
		delete(fs.m, key)
		return nil, false
	}
	return f, ok
}

// dropLocked retires f and takes it out of the set (if it is still
// there, not a newer flight of its key). Call with fs.mu held.
func (fs *Flights) dropLocked(f *Flight) {
	f.Retire()
	if fs.m[f.Key] == f {
		delete(fs.m, f.Key)
	}
}

// Requesters counts the requesters attached to key's download (0: none).
func (fs *Flights) Requesters(key Key) int {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f, ok := fs.live(key)
	if !ok {
		return 0
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.who.creds)
}

// SwitchCred is called when the upstream refused used: the download goes
// on with the credentials of another attached requester, if one has some
// the upstream has not refused yet. When none is left and the refusal ends
// the download (final), the flight leaves the set under the same lock
// joiners take, so that nobody joins it from then on: every joiner's
// credentials are tried before a refusal fails the flight.
func (fs *Flights) SwitchCred(f *Flight, used Cred, final bool) bool {
	fs.mu.Lock()
	defer fs.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	f.who.refused[used] = true
	for _, c := range f.who.creds {
		if !f.who.refused[*c] {
			f.who.cur = c
			return true
		}
	}
	if final {
		fs.dropLocked(f)
	}
	return false
}

// Credential is what the download authenticates with now.
func (f *Flight) Credential() Cred {
	f.mu.Lock()
	defer f.mu.Unlock()
	return *f.who.cur
}

// SwitchCred is Flights.SwitchCred for f.
func (f *Flight) SwitchCred(used Cred, final bool) bool { return f.flights.SwitchCred(f, used, final) }

// Finish records a committed blob: release unpins it once the last
// requester left.
func (f *Flight) Finish(release func(), o Outcome) {
	f.mu.Lock()
	f.finished = finished{release: release, outcome: o}
	f.mu.Unlock()
}

// End closes the download with its verdict (nil: committed), after taking
// it out of the set: a requester told of a failure must be able to start
// afresh rather than join the failed flight; then the runner's reference.
// A failed download's file is the store's to keep or remove (the runner
// abandons it first).
func (f *Flight) End(err error) {
	fs := f.flights
	fs.mu.Lock()
	fs.dropLocked(f)
	fs.mu.Unlock()
	if err != nil {
		f.Blob.Fail(err)
	}
	f.mu.Lock()
	f.err = err
	f.who.cur = nil
	f.mu.Unlock()
	close(f.done)
	f.leave(nil)
}

// Retire takes the flight out of the set: nobody joins it from then on.
// The runner calls it when the blob's file becomes the cache's, before the
// cache shows it: from then on the cache answers for that file, and
// checks it again once it changed. A requester that found the cached copy
// corrupt and joined this flight would be handed the same file as
// verified bytes.
//
// It takes no lock: the store calls it under its own (Store.Commit's
// published), while Join holds the set's lock as it creates a partial
// blob in the store; taking the set's lock here deadlocked the two (a
// 20-minute hang of the agent's tests under `make stress`).
func (f *Flight) Retire() { f.retired.Store(true) }

// Outcome is where the bytes came from (after Wait returned nil).
func (f *Flight) Outcome() Outcome {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.finished.outcome
}

// leave detaches one requester (c its credentials, nil for the runner).
func (f *Flight) leave(c *Cred) {
	f.mu.Lock()
	f.refs--
	last := f.refs == 0
	if i := slices.Index(f.who.creds, c); c != nil && i >= 0 {
		f.who.creds = slices.Delete(f.who.creds, i, i+1)
	}
	release := f.finished.release
	f.mu.Unlock()
	if last {
		f.Blob.Close()
		if release != nil {
			release()
		}
	}
}

// Wait blocks until the blob is committed to the cache or failed.
func (f *Flight) Wait(ctx context.Context) error {
	select {
	case <-f.done:
		return f.err
	case <-ctx.Done():
		return ctx.Err()
	}
}
