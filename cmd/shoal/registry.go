package main

import (
	"context"
	"errors"
	"flag"

	"github.com/shoalproject/shoal/registry"
)

func init() {
	register("registry", command{
		summary: "run the registry (a distribution config.yml, p2p middleware)",
		run:     runRegistry,
	})
}

func runRegistry(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("registry", flag.ContinueOnError)
	config := fs.String("config", "", "distribution config.yml (REGISTRY_* environment variables override it)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *config == "" && fs.NArg() == 1 {
		*config = fs.Arg(0) // `shoal registry config.yml`, as `registry serve config.yml`
	}
	if *config == "" {
		return errors.New("registry: --config is required")
	}
	cfg, err := registry.LoadConfig(*config)
	if err != nil {
		return err
	}
	s, err := registry.New(ctx, cfg)
	if err != nil {
		return err
	}
	return s.Run(ctx)
}
