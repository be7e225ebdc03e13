package main

import (
	"slices"
	"testing"
)

// TestEventOrder: by time, then first scheduled first; atLate after
// everything else of its instant, even what is scheduled later for it.
func TestEventOrder(t *testing.T) {
	s := &sim{}
	var got []string
	log := func(name string) func() { return func() { got = append(got, name) } }
	s.at(2, log("b@2"))
	s.atLate(1, log("late@1"))
	s.at(1, log("a@1"))
	s.at(1, func() {
		got = append(got, "c@1")
		s.at(1, log("d@1 (scheduled at 1)"))
		s.at(0.5, log("e (past: runs now)"))
	})
	s.at(3, log("f@3"))
	s.run(2.5, nil)
	want := []string{"a@1", "c@1", "d@1 (scheduled at 1)", "e (past: runs now)", "late@1", "b@2"}
	if !slices.Equal(got, want) {
		t.Fatalf("order %q, want %q", got, want)
	}
	if s.now != 2.5 {
		t.Fatalf("clock %v after run(2.5), want 2.5", s.now)
	}
}
