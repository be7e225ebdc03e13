package main

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/registry"
)

// startRunRegistry starts the embedded registry on config.RegistryAddr.
func startRunRegistry(ctx context.Context, g *errgroup.Group, dataDir string, shared runShared) error {
	cfg, err := registry.EmbeddedConfig(registry.EmbeddedOptions{
		DataDir:       dataDir,
		TrackerURL:    shared.TrackerURL,
		TrackerSecret: shared.TrackerSecret,
		HTTPSecret:    shared.HTTPSecret,
		ClusterSecret: shared.ClusterSecret,
	})
	if err != nil {
		return err
	}
	s, err := registry.New(cfg, registry.Deps{Log: shared.Log.NewLogger("registry"), ProcessMetrics: shared.Metrics})
	if err != nil {
		return err
	}
	l, err := listen("registry", s, cfg.HTTP.Addr)
	if err != nil {
		return err
	}
	g.Go(func() error { return s.Serve(ctx, l) })
	return nil
}
