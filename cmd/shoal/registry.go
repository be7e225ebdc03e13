package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	"github.com/distribution/distribution/v3/tracing"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/metrics"
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
	cfg, notes, err := registry.LoadConfigNotes(*config)
	if err != nil {
		return err
	}
	log, err := registry.NewLogger(cfg)
	if err != nil {
		return err
	}
	for _, n := range notes {
		log.Warn("registry config: " + n)
	}
	// distribution's handlers log through logrus's standard logger. This
	// process is the registry alone, so, as upstream's `registry serve`, it
	// gives that logger the config's log block (`shoal run` leaves it be).
	std := logrus.StandardLogger()
	std.SetLevel(log.Logger.Level)
	std.SetFormatter(log.Logger.Formatter)
	std.SetReportCaller(log.Logger.ReportCaller)
	if len(cfg.Log.Fields) > 0 {
		std.AddHook(fieldsHook(cfg.Log.Fields))
	}
	if _, set := os.LookupEnv("OTEL_TRACES_EXPORTER"); set {
		// Upstream exports traces to localhost:4318 unless told otherwise
		// and logs an error every few seconds when nothing listens there;
		// Shoal traces only when asked to.
		if err := tracing.InitOpenTelemetry(ctx); err != nil {
			return fmt.Errorf("registry: OpenTelemetry: %w", err)
		}
	}
	s, err := registry.New(cfg, registry.Deps{Log: log, ProcessMetrics: metrics.NewProcessRegistry()})
	if err != nil {
		return err
	}
	l, err := registry.Listen(cfg)
	if err != nil {
		s.Close()
		return err
	}
	return s.Serve(ctx, l)
}

// fieldsHook adds distribution's log.fields to entries that lack them, as
// upstream puts them on the logger it hands its handlers.
type fieldsHook map[string]any

func (fieldsHook) Levels() []logrus.Level { return logrus.AllLevels }

func (h fieldsHook) Fire(e *logrus.Entry) error {
	if e.Data == nil {
		e.Data = logrus.Fields{}
	}
	for k, v := range h {
		if _, ok := e.Data[k]; !ok {
			e.Data[k] = v
		}
	}
	return nil
}
