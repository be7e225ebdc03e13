package preheat_test

import (
	"testing"

	"github.com/shoalproject/shoal/preheat"
	"github.com/shoalproject/shoal/preheat/storetest"
)

// Both Store implementations pass the one suite: the embedded mode cannot
// drift from production.
func TestMemoryStore(t *testing.T) {
	storetest.Run(t, func(*testing.T) storetest.Store { return preheat.NewMemoryStore() })
}

func TestRedisStore(t *testing.T) {
	fresh := storetest.Redis(t)
	storetest.Run(t, func(t *testing.T) storetest.Store { return preheat.NewRedisStore(fresh(t)) })
}
