package nodes_test

import (
	"testing"

	"github.com/shoalproject/shoal/preheat/nodes"
	"github.com/shoalproject/shoal/preheat/storetest"
)

func TestMemory(t *testing.T) {
	storetest.RunNodes(t, func(*testing.T) nodes.Store { return nodes.NewMemory(nil) })
	storetest.RunKeys(t, func(*testing.T) nodes.KeyStore { return nodes.NewMemory(nil) })
}

func TestRedis(t *testing.T) {
	fresh := storetest.Redis(t)
	storetest.RunNodes(t, func(t *testing.T) nodes.Store { return nodes.NewRedis(fresh(t)) })
	storetest.RunKeys(t, func(t *testing.T) nodes.KeyStore { return nodes.NewRedis(fresh(t)) })
}
