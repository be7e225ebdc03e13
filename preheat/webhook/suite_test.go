package webhook_test

import (
	"testing"

	"github.com/shoalproject/shoal/preheat/storetest"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// The delivery stores pass their part of the store suite, in memory and
// on a real Redis.
func TestMemorySuite(t *testing.T) {
	storetest.RunDeliveries(t, func(*testing.T) webhook.DeliveryStore { return webhook.NewMemory() })
}

func TestRedisSuite(t *testing.T) {
	fresh := storetest.Redis(t)
	storetest.RunDeliveries(t, func(t *testing.T) webhook.DeliveryStore { return webhook.NewRedis(fresh(t)) })
}
