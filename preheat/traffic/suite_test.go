package traffic_test

import (
	"testing"

	"github.com/shoalproject/shoal/preheat/storetest"
	"github.com/shoalproject/shoal/preheat/traffic"
)

// The traffic store alone passes its part of the store suite, in memory
// and on a real Redis (preheat's stores run it too, as parts of a whole
// Store).
func TestMemorySuite(t *testing.T) {
	storetest.RunTraffic(t, func(*testing.T) traffic.Store { return traffic.NewMemory() })
}

func TestRedisSuite(t *testing.T) {
	fresh := storetest.Redis(t)
	storetest.RunTraffic(t, func(t *testing.T) traffic.Store { return traffic.NewRedis(fresh(t)) })
}
