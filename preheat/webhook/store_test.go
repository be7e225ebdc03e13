package webhook

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Delivery ids are sized by the sender: the memory store keeps each as a
// fixed-size hash and drops expired ones as it grows (moved from preheat's
// TestAttackDedupeKeysBounded).
func TestMemoryBounded(t *testing.T) {
	ctx := context.Background()
	big := strings.Repeat("k", 1<<20)
	now := time.Unix(1_700_000_000, 0)
	m := NewMemory()
	for i := range 5000 {
		if first, err := m.MarkSeen(ctx, now, fmt.Sprintf("%s%d", big[:1<<10], i), time.Minute); err != nil || !first {
			t.Fatalf("mark %d: %v %v", i, first, err)
		}
		now = now.Add(100 * time.Millisecond) // ~600 ids live at once
	}
	if first, _ := m.MarkSeen(ctx, now, big, time.Minute); !first {
		t.Fatal("a new id counted as seen")
	}
	if first, _ := m.MarkSeen(ctx, now, big, time.Minute); first {
		t.Fatal("a repeated id counted as new")
	}
	m.mu.Lock()
	n, longest := len(m.seen), 0
	for k := range m.seen {
		longest = max(longest, len(k))
	}
	m.mu.Unlock()
	if n > 2*minSweep || longest > 64 {
		t.Fatalf("memory store keeps %d ids, the longest %d bytes", n, longest)
	}
}
