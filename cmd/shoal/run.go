package main

import (
	"context"
	"flag"
	"fmt"

	"golang.org/x/sync/errgroup"
)

func init() {
	register("run", command{
		summary: "run every component in one process with embedded defaults (quick start)",
		run:     runAll,
	})
}

// runAll starts the all-in-one deployment: no external services, state under
// --data. Each component adds itself to the group below.
func runAll(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	dataDir := fs.String("data", "./data", "directory for all state (registry storage, caches)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	g, ctx := errgroup.WithContext(ctx)
	_ = dataDir
	if err := startRunAgent(ctx, g, *dataDir); err != nil {
		return err
	}
	// components: registry (registry core), tracker, agent, preheat
	if err := g.Wait(); err != nil {
		return fmt.Errorf("shoal run: %w", err)
	}
	return nil
}
