package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net/url"

	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/tracker"
)

func init() {
	register("tracker", command{
		summary: "run the BitTorrent tracker (peers in memory or Redis, signed announces)",
		run:     runTracker,
	})
}

func runTracker(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("tracker", flag.ContinueOnError)
	configPath := fs.String("config", "", "tracker config file (see configs/tracker.yml)")
	addr := fs.String("addr", "", "listen address, overrides the config's addr")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *configPath == "" {
		return errors.New("tracker: --config is required")
	}
	cfg, err := tracker.LoadConfig(*configPath)
	if err != nil {
		return err
	}
	if *addr != "" {
		cfg.Addr = *addr
	}
	s, err := tracker.New(cfg, tracker.Deps{
		Log:            cfg.Log.NewLogger("tracker"),
		ProcessMetrics: metrics.NewProcessRegistry(),
	})
	if err != nil {
		return err
	}
	l, err := listen("tracker", s, cfg.Addr)
	if err != nil {
		return err
	}
	return s.Serve(ctx, l)
}

// startRunTracker starts the embedded in-memory tracker of `shoal run`,
// listening on the host:port of shared.TrackerURL and accepting tokens
// signed with shared.TrackerSecret from members of shared.ClusterSecret;
// shared.TrackerAPIToken opens its read API to the embedded preheat's
// console.
func startRunTracker(ctx context.Context, g *errgroup.Group, shared runShared) error {
	u, err := url.Parse(shared.TrackerURL)
	if err != nil {
		return fmt.Errorf("tracker: announce URL %q: %w", shared.TrackerURL, err)
	}
	cfg := tracker.DefaultConfig()
	cfg.Addr = u.Host
	cfg.Secrets = config.NewTokens(shared.TrackerSecret)
	// The agents' join secret: only their signed announces are handed out.
	cfg.Cluster.Secret = shared.ClusterSecret
	cfg.APITokens = config.NewTokens(shared.TrackerAPIToken)
	cfg.Log = shared.Log
	s, err := tracker.New(cfg, tracker.Deps{
		Log:            shared.Log.NewLogger("tracker"),
		ProcessMetrics: shared.Metrics,
	})
	if err != nil {
		return err
	}
	l, err := listen("tracker", s, cfg.Addr)
	if err != nil {
		return err
	}
	g.Go(func() error { return s.Serve(ctx, l) })
	return nil
}
