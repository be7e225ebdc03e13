package traffic_test

import (
	"testing"

	"github.com/shoalproject/shoal/preheat/storetest"
	"github.com/shoalproject/shoal/preheat/traffic"
)

// The traffic store alone passes its part of the store suite (preheat's
// stores run it too, memory and Redis, as parts of a whole Store).
func TestMemorySuite(t *testing.T) {
	storetest.RunTraffic(t, func(*testing.T) traffic.Store { return traffic.NewMemory() })
}
