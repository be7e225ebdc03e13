package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/url"

	"github.com/sirupsen/logrus"
	"golang.org/x/sync/errgroup"

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
	if lvl, err := logrus.ParseLevel(cfg.LogLevel); err == nil {
		logrus.SetLevel(lvl)
	} else {
		return fmt.Errorf("tracker config: log_level: %w", err)
	}
	s, err := tracker.New(cfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		s.Close()
		return fmt.Errorf("tracker: listen %s: %w", cfg.Addr, err)
	}
	return s.Serve(ctx, l)
}

// startRunTracker starts the embedded in-memory tracker of `shoal run`,
// listening on the host:port of announceURL and accepting tokens signed with
// secret; apiToken opens its read API to the embedded preheat's console.
func startRunTracker(ctx context.Context, g *errgroup.Group, announceURL, secret, apiToken string) error {
	u, err := url.Parse(announceURL)
	if err != nil {
		return fmt.Errorf("tracker: announce URL %q: %w", announceURL, err)
	}
	cfg := tracker.DefaultConfig()
	cfg.Addr = u.Host
	cfg.Secrets = []string{secret}
	cfg.APITokens = []string{apiToken}
	s, err := tracker.New(cfg)
	if err != nil {
		return err
	}
	l, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		s.Close()
		return fmt.Errorf("tracker: listen %s: %w", cfg.Addr, err)
	}
	g.Go(func() error { return s.Serve(ctx, l) })
	return nil
}
