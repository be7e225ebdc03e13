package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/metrics"
	"github.com/shoalproject/shoal/preheat"
	"github.com/shoalproject/shoal/preheat/client"
)

func init() {
	register("preheat", command{
		summary: "preheat service (serve, --config) and client (create, status, list, cancel)",
		run:     runPreheat,
	})
}

const preheatUsage = `Usage:
  shoal preheat [serve] --config FILE          run the preheat service
  shoal preheat create <image> [--group G]... [--node ID|IP]... [--count N | --percentage P]
                              [--platform os/arch]... [--username U --password P] [--watch]
  shoal preheat status <id> [--watch]
  shoal preheat list
  shoal preheat cancel <id>
Client commands take --api (default $SHOAL_PREHEAT_API or http://127.0.0.1:8002)
and --token (default $SHOAL_PREHEAT_TOKEN).
`

func runPreheat(ctx context.Context, args []string) error {
	sub := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		sub, args = args[0], args[1:]
	}
	switch sub {
	case "serve":
		return preheatServe(ctx, args)
	case "create", "status", "list", "cancel":
		return preheatClient(ctx, sub, args)
	case "help":
		fmt.Fprint(os.Stderr, preheatUsage)
		return nil
	}
	fmt.Fprint(os.Stderr, preheatUsage)
	return fmt.Errorf("unknown preheat subcommand %q", sub)
}

func preheatServe(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("preheat serve", flag.ContinueOnError)
	cfgFile := fs.String("config", "", "YAML config (configs/preheat.yml); defaults are the embedded settings")
	addr := fs.String("addr", "", "override the config's addr (the API's listen address)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	cfg := preheat.DefaultConfig()
	if *cfgFile != "" {
		var err error
		if cfg, err = preheat.LoadConfig(*cfgFile); err != nil {
			return err
		}
	}
	if *addr != "" {
		cfg.Addr = *addr
	}
	svc, err := preheat.New(cfg, preheat.Deps{Log: cfg.Log.NewLogger("preheat"), ProcessMetrics: metrics.NewProcessRegistry()})
	if err != nil {
		return err
	}
	l, err := listen("preheat", svc, cfg.Addr)
	if err != nil {
		return err
	}
	return svc.Serve(ctx, l)
}

// parseInterspersed lets flags follow positional arguments
// (`create img --group a`), which the flag package alone stops at.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, strings.Split(v, ",")...); return nil }

func preheatClient(ctx context.Context, sub string, args []string) error {
	fs := flag.NewFlagSet("preheat "+sub, flag.ContinueOnError)
	defAPI := os.Getenv("SHOAL_PREHEAT_API")
	if defAPI == "" {
		defAPI = "http://" + config.PreheatAddr
	}
	apiURL := fs.String("api", defAPI, "preheat API base URL")
	token := fs.String("token", os.Getenv("SHOAL_PREHEAT_TOKEN"), "API bearer token")
	watch := fs.Bool("watch", false, "follow progress until the job ends")
	var groups, platforms multiFlag
	fs.Var(&groups, "group", "target node group (repeatable; default: configured defaults or all)")
	fs.Var(&platforms, "platform", "platform filter os/arch[/variant] (repeatable)")
	var nodes multiFlag
	fs.Var(&nodes, "node", "only these nodes, by id or IP (repeatable)")
	count := fs.Int("count", 0, "preheat this many of the eligible live nodes")
	percentage := fs.Int("percentage", 0, "preheat this share (1-100) of the eligible live nodes")
	user := fs.String("username", "", "registry username (used for this job only)")
	pass := fs.String("password", os.Getenv("SHOAL_REGISTRY_PASSWORD"), "registry password (default $SHOAL_REGISTRY_PASSWORD)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return err
	}
	api := client.New(*apiURL, *token, nil)
	needOne := func() (string, error) {
		if len(pos) != 1 {
			return "", fmt.Errorf("preheat %s: want exactly one argument\n%s", sub, preheatUsage)
		}
		return pos[0], nil
	}
	switch sub {
	case "create":
		img, err := needOne()
		if err != nil {
			return err
		}
		req := preheat.JobRequest{Image: img, Groups: groups, Nodes: nodes, Count: *count, Percentage: *percentage,
			Platforms: platforms, Username: *user, Password: *pass}
		v, err := api.CreateJob(ctx, req)
		if err != nil {
			return err
		}
		fmt.Printf("job %d %s: %s, %d blobs, groups %v%s\n", v.ID, v.State, v.Image, len(v.Blobs), orAll(v.Groups), narrowing(v.Job))
		if *watch {
			return watchJob(ctx, api, v.ID)
		}
		return nil
	case "status":
		id, err := needOne()
		if err != nil {
			return err
		}
		var n int64
		if _, err := fmt.Sscan(id, &n); err != nil {
			return fmt.Errorf("job id %q is not a number", id)
		}
		if *watch {
			return watchJob(ctx, api, n)
		}
		v, err := api.Job(ctx, n)
		if err != nil {
			return err
		}
		fmt.Print(renderJob(v))
		return nil
	case "list":
		jobs, err := api.Jobs(ctx, 0)
		if err != nil {
			return err
		}
		fmt.Printf("%-6s %-9s %-20s %-6s %s\n", "ID", "STATE", "CREATED", "BLOBS", "IMAGE")
		for _, j := range jobs {
			fmt.Printf("%-6d %-9s %-20s %-6d %s\n", j.ID, j.State, j.CreatedAt.Local().Format("2006-01-02 15:04:05"), len(j.Blobs), j.Image)
		}
		return nil
	case "cancel":
		id, err := needOne()
		if err != nil {
			return err
		}
		var n int64
		if _, err := fmt.Sscan(id, &n); err != nil {
			return fmt.Errorf("job id %q is not a number", id)
		}
		j, err := api.CancelJob(ctx, n)
		if err != nil {
			return err
		}
		fmt.Printf("job %d %s\n", j.ID, j.State)
		return nil
	}
	return nil
}

// narrowing describes the node, count and percentage parts of a target.
func narrowing(j *preheat.Job) string {
	var b strings.Builder
	if len(j.Nodes) > 0 {
		fmt.Fprintf(&b, ", nodes %v", j.Nodes)
	}
	if j.Count > 0 {
		fmt.Fprintf(&b, ", %d of them", j.Count)
	}
	if j.Percentage > 0 {
		fmt.Fprintf(&b, ", %d%% of them", j.Percentage)
	}
	return b.String()
}

func orAll(g []string) any {
	if len(g) == 0 {
		return "all"
	}
	return g
}

// renderJob draws one progress bar per group plus failures.
func renderJob(v *preheat.JobView) string {
	var b strings.Builder
	fmt.Fprintf(&b, "job %d %-8s %s  (%d blobs)\n", v.ID, v.State, v.Image, len(v.Blobs))
	for _, g := range v.GroupProgress {
		frac := 0.0
		if g.Total > 0 {
			frac = float64(g.Succeeded) / float64(g.Total)
		}
		const width = 30
		fill := int(frac * width)
		fmt.Fprintf(&b, "  %-12s [%s%s] %3.0f%%  %d/%d fetches  %s/%s  nodes %d  failed %d\n",
			g.Group, strings.Repeat("#", fill), strings.Repeat(".", width-fill), frac*100,
			g.Succeeded, g.Total, human(g.Bytes), human(g.TotalBytes), g.Nodes, g.Failed)
	}
	if v.Error != "" {
		fmt.Fprintf(&b, "  error: %s\n", v.Error)
	}
	return b.String()
}

func human(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%dB", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f%ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

func watchJob(ctx context.Context, api *client.Client, id int64) error {
	fi, _ := os.Stdout.Stat()
	tty := fi != nil && fi.Mode()&os.ModeCharDevice != 0
	prevLines := 0
	prev := ""
	for {
		v, err := api.Job(ctx, id)
		if err != nil {
			return err
		}
		out := renderJob(v)
		if out != prev {
			if tty && prevLines > 0 {
				fmt.Printf("\033[%dA\033[J", prevLines) // redraw in place
			}
			fmt.Print(out)
			prev, prevLines = out, strings.Count(out, "\n")
		}
		if v.State.Terminal() {
			if v.State != preheat.StateSuccess {
				return fmt.Errorf("job %d %s: %s", v.ID, v.State, v.Error)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
	}
}

// startRunPreheat adds the embedded preheat service to `shoal run`:
// 127.0.0.1:8002, in-memory store (single replica), registry
// http://127.0.0.1:5000 (the only one jobs may name) — preheat.DefaultConfig
// — and the run's join secret, so it enrolls the embedded agent. tokens,
// when given, guard job writes and the console as apiTokens do.
func startRunPreheat(ctx context.Context, g *errgroup.Group, shared runShared, tokens []string) error {
	cfg := preheat.DefaultConfig()
	cfg.Log = shared.Log
	cfg.Cluster.Secret = config.NewSecret(shared.ClusterSecret)
	cfg.APITokens = config.NewTokens(tokens...)
	// The console's Swarms view reads the embedded tracker.
	cfg.Tracker.URL = strings.TrimSuffix(shared.TrackerURL, "/announce")
	cfg.Tracker.Token = config.NewSecret(shared.TrackerAPIToken)
	svc, err := preheat.New(cfg, preheat.Deps{Log: shared.Log.NewLogger("preheat"), ProcessMetrics: shared.Metrics})
	if err != nil {
		return fmt.Errorf("preheat: %w", err)
	}
	l, err := listen("preheat", svc, cfg.Addr)
	if err != nil {
		return err
	}
	how := "open to loopback clients (no --preheat-token)"
	if len(tokens) > 0 {
		how = "log in with the --preheat-token"
	}
	fmt.Fprintf(os.Stderr, "shoal run: admin console at http://%s/console/, %s\n", cfg.Addr, how)
	g.Go(func() error { return svc.Serve(ctx, l) })
	return nil
}
