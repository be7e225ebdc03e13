package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/agent"
)

func init() {
	register("agent", command{
		summary: "run the node agent: registry mirror for containerd/Docker with P2P blob download",
		run:     runAgent,
	})
}

func runAgent(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("agent", flag.ContinueOnError)
	cfgPath := fs.String("config", "", "agent configuration file (see configs/agent.yml); defaults when empty")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := agent.DefaultConfig()
	if *cfgPath != "" {
		var err error
		if cfg, err = agent.LoadConfig(*cfgPath); err != nil {
			return err
		}
	}
	a, err := agent.New(cfg)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	return a.Serve(ctx)
}

// startRunAgent adds the all-in-one agent to `shoal run`: mirror on
// 127.0.0.1:65001 in front of the local registry, cache under <data>/agent,
// control API on 127.0.0.1:65002 registered with the embedded preheat service.
func startRunAgent(ctx context.Context, g *errgroup.Group, dataDir string, shared runShared) error {
	cfg := agent.DefaultConfig()
	cfg.Cache.Dir = filepath.Join(dataDir, "agent")
	cfg.Cluster.Secret = shared.ClusterSecret
	// Register with the embedded preheat service (startRunPreheat's address).
	cfg.Preheat.URL = "http://127.0.0.1:8002"
	a, err := agent.New(cfg)
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	g.Go(func() error { return a.Serve(ctx) })
	return nil
}
