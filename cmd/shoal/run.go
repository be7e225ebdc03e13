package main

import (
	"context"
	"flag"
	"fmt"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/internal/secret"
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
	preheatToken := fs.String("preheat-token", "",
		"require this token for preheat writes and the console (env:NAME or file:/path also work; >= 32 bytes); "+
			"without it the console at http://127.0.0.1:8002/console/ is open to loopback clients")
	clusterSecret := fs.String("cluster-secret", "",
		"the join secret (env:NAME or file:/path also work; >= 32 bytes), for agents on other hosts to join "+
			"this all-in-one deployment; without it a fresh one is generated per run")
	if err := fs.Parse(args); err != nil {
		return err
	}
	var tokens []string
	if *preheatToken != "" {
		t, err := secret.Resolve("--preheat-token", *preheatToken)
		if err != nil {
			return err
		}
		tokens = []string{t}
	}
	g, ctx := errgroup.WithContext(ctx)
	shared := newRunShared()
	if *clusterSecret != "" {
		s, err := secret.Resolve("--cluster-secret", *clusterSecret)
		if err != nil {
			return err
		}
		shared.ClusterSecret = s
	}
	if err := startRunRegistry(ctx, g, *dataDir, shared); err != nil {
		return err
	}
	// tracker: in-memory on 127.0.0.1:6969 (shared.TrackerURL), checking
	// the tokens the registry signs with shared.TrackerSecret.
	if err := startRunTracker(ctx, g, shared); err != nil {
		return err
	}
	// preheat: 127.0.0.1:8002, in-memory store, registry http://127.0.0.1:5000,
	// enrolling agents of shared.ClusterSecret.
	if err := startRunPreheat(ctx, g, shared, tokens); err != nil {
		return err
	}
	// The agent last: its first heartbeat goes to preheat.
	if err := startRunAgent(ctx, g, *dataDir, shared); err != nil {
		return err
	}
	// components: registry (registry core), tracker, agent, preheat
	if err := g.Wait(); err != nil {
		return fmt.Errorf("shoal run: %w", err)
	}
	return nil
}

// runShared is what the embedded components must agree on.
type runShared struct {
	// TrackerURL is the embedded tracker's announce URL.
	TrackerURL string
	// TrackerSecret signs announce tokens (registry) and checks them
	// (tracker). Fresh per run: torrents handed out live minutes, not across
	// restarts.
	TrackerSecret string
	// TrackerAPIToken guards the tracker's read API, which preheat's
	// console reads for its Swarms view.
	TrackerAPIToken string
	// HTTPSecret is the registry's http.secret.
	HTTPSecret string
	// ClusterSecret is the join secret of the agent, the registry's
	// seeder and preheat. Fresh per run like the others.
	ClusterSecret string
	// Metrics holds the process's Go and process collectors, served by
	// every component's /metrics next to its own.
	Metrics *prometheus.Registry
	// Log is every embedded component's log block.
	Log config.Log
}

func newRunShared() runShared {
	return runShared{
		TrackerURL:      "http://" + config.TrackerAddr + "/announce",
		TrackerSecret:   secret.Generate(),
		TrackerAPIToken: secret.Generate(),
		HTTPSecret:      secret.Generate(),
		ClusterSecret:   secret.Generate(),
		Metrics:         metrics.NewProcessRegistry(),
		Log:             config.DefaultLog(),
	}
}
