package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/shoalproject/shoal/internal/cfgrender"
)

func init() {
	register("config-render", command{
		summary: "fill ${VAR} placeholders of a config template from the environment (Kubernetes Secrets)",
		run:     runConfigRender,
	})
}

// runConfigRender is the Helm chart's config init container: the template
// comes from a ConfigMap, the secrets from Secret-backed environment
// variables, and the result goes to a memory-backed volume that only the
// component's container mounts.
func runConfigRender(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("config-render", flag.ContinueOnError)
	in := fs.String("in", "", "template file")
	out := fs.String("out", "", "rendered file (written 0600, atomically)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("config-render: unexpected argument %q (the template is --in)", fs.Arg(0))
	}
	if *in == "" || *out == "" {
		return errors.New("config-render: --in and --out are required")
	}
	tmpl, err := os.ReadFile(*in)
	if err != nil {
		return fmt.Errorf("config-render: %w", err)
	}
	b, err := cfgrender.Expand(tmpl, os.LookupEnv)
	if err != nil {
		return fmt.Errorf("config-render: %s: %w", *in, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(*out), ".render.*")
	if err != nil {
		return fmt.Errorf("config-render: %w", err)
	}
	_, werr := tmp.Write(b)
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr == nil {
		werr = os.Rename(tmp.Name(), *out)
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("config-render: %w", werr)
	}
	return nil
}
