package rstore

import (
	"testing"
	"time"
)

func TestPrefix(t *testing.T) {
	for in, want := range map[string]string{
		"":                 "{shoal:preheat}:",
		"test:preheat:":    "{test:preheat}:",
		"{shoal-preheat}:": "{shoal-preheat}:",
		"{t}:x:":           "{t}:x:",
	} {
		if got := Prefix(in); got != want || Prefix(got) != got {
			t.Errorf("Prefix(%q) = %q, want %q (and idempotent)", in, got, want)
		}
	}
}

func TestTTL(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	b := Base{prefix: "{p}:", now: func() time.Time { return now }}
	for _, tc := range []struct {
		deadline time.Time
		want     int64
	}{
		{now.Add(time.Minute), 60_000},
		{now.Add(time.Microsecond), 1}, // rounded up: never 0 while the deadline is ahead
		{now, 0},
		{now.Add(-time.Second), 0},
	} {
		if got := b.TTL(tc.deadline); got != tc.want {
			t.Errorf("TTL(now%+v) = %d, want %d", tc.deadline.Sub(now), got, tc.want)
		}
	}
	if k := b.Key("job", "7"); k != "{p}:job:7" {
		t.Errorf("Key = %q", k)
	}
}
