package main

import (
	"context"

	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/registry"
)

// startRunRegistry starts the embedded registry on 127.0.0.1:5000.
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
	s, err := registry.New(ctx, cfg)
	if err != nil {
		return err
	}
	g.Go(func() error { return s.Run(ctx) })
	return nil
}
