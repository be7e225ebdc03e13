package main

import (
	"context"
	"flag"
	"fmt"
	"path/filepath"

	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/metrics"
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
	a, err := agent.New(cfg, agent.Deps{Log: cfg.Log.NewLogger("agent"), ProcessMetrics: metrics.NewProcessRegistry()})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	l, err := listen("agent mirror", a, cfg.Mirror.Addr)
	if err != nil {
		return err
	}
	return a.Serve(ctx, l)
}

// startRunAgent adds the all-in-one agent to `shoal run`: mirror on
// 127.0.0.1:65001 in front of the local registry, cache under <data>/agent,
// control API on 127.0.0.1:65002 registered with the embedded preheat service.
func startRunAgent(ctx context.Context, g *errgroup.Group, dataDir string, shared runShared) error {
	cfg := agent.DefaultConfig()
	cfg.Cache.Dir = filepath.Join(dataDir, "agent")
	cfg.Cluster.Secret = shared.ClusterSecret
	cfg.Log = shared.Log
	// Register with the embedded preheat service (startRunPreheat's address).
	cfg.Preheat.URL = "http://" + config.PreheatAddr
	a, err := agent.New(cfg, agent.Deps{Log: shared.Log.NewLogger("agent"), ProcessMetrics: shared.Metrics})
	if err != nil {
		return fmt.Errorf("agent: %w", err)
	}
	l, err := listen("agent mirror", a, cfg.Mirror.Addr)
	if err != nil {
		return err
	}
	g.Go(func() error { return a.Serve(ctx, l) })
	return nil
}
