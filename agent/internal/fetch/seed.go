package fetch

import (
	"sync"
	"time"

	"github.com/anacrolix/torrent"
)

// seeder keeps downloaded blobs seeding for their seed time.
type seeder struct {
	mu    sync.Mutex
	seeds map[string]*seed // by sha256 hex
}

type seed struct {
	t     *torrent.Torrent
	timer *time.Timer
}

func newSeeder() *seeder { return &seeder{seeds: map[string]*seed{}} }

// drop stops seeding a blob (evicted, seed time over, or re-downloaded).
func (s *seeder) drop(hexd string) {
	s.mu.Lock()
	sd, ok := s.seeds[hexd]
	delete(s.seeds, hexd)
	s.mu.Unlock()
	if ok {
		sd.timer.Stop()
		sd.t.Drop()
	}
}

// keep seeds t for d, in place of the blob's previous torrent.
func (s *seeder) keep(hexd string, t *torrent.Torrent, d time.Duration) {
	s.drop(hexd)
	sd := &seed{t: t}
	sd.timer = time.AfterFunc(d, func() {
		s.mu.Lock()
		cur, ok := s.seeds[hexd]
		if ok && cur == sd {
			delete(s.seeds, hexd)
		}
		s.mu.Unlock()
		if ok && cur == sd {
			t.Drop()
		}
	})
	s.mu.Lock()
	s.seeds[hexd] = sd
	s.mu.Unlock()
}

// seeding reports whether the blob is seeding.
func (s *seeder) seeding(hexd string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.seeds[hexd]
	return ok
}
