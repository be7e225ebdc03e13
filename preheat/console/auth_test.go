package console

import (
	"fmt"
	"testing"
	"time"
)

func TestLoginLimiter(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	l := newLimiter()
	for i := range LoginBurst {
		if !l.allow("a", now) {
			t.Fatalf("attempt %d refused", i)
		}
	}
	if l.allow("a", now) {
		t.Fatal("burst exceeded")
	}
	if !l.allow("b", now) {
		t.Fatal("another client refused")
	}
	if !l.allow("a", now.Add(loginEvery)) {
		t.Fatal("no refill")
	}
	// In total: many clients, each within its own bound, still stop.
	l = newLimiter()
	allowed := 0
	for i := range 1000 {
		if l.allow(fmt.Sprint("c", i), now) {
			allowed++
		}
	}
	if allowed != loginTotalBurst {
		t.Fatalf("%d attempts from distinct clients at once, want %d", allowed, loginTotalBurst)
	}
	// Bounded memory: idle clients are dropped once the table is full.
	l = newLimiter()
	for i := range 3 * loginMaxClients {
		l.allow(fmt.Sprint("c", i), now.Add(time.Duration(i)*time.Second))
	}
	if len(l.clients) > loginMaxClients {
		t.Fatalf("%d clients kept", len(l.clients))
	}
}
