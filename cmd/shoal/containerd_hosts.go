package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"strings"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/containerdhosts"
)

func init() {
	register("containerd-hosts", command{
		summary: "point containerd at the agent: write certs.d/<registry>/hosts.toml, check config_path",
		run:     runContainerdHosts,
	})
}

// stringList is a repeatable flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }

// runContainerdHosts is what the Helm chart's agent init container runs; on
// a node by hand it is
//
//	shoal containerd-hosts --registry docker.io --registry registry.example.com
func runContainerdHosts(_ context.Context, args []string) error {
	fs := flag.NewFlagSet("containerd-hosts", flag.ContinueOnError)
	var regs stringList
	fs.Var(&regs, "registry", "registry to pull through the agent: host[:port] as in image names, host=https://server, or _default for every other registry (repeatable)")
	mirror := fs.String("mirror", "http://"+config.MirrorAddr, "the agent's mirror URL as containerd reaches it")
	certsDir := fs.String("certs-dir", "/etc/containerd/certs.d", "containerd's hosts directory (a config_path entry), as containerd sees it")
	config := fs.String("containerd-config", "/etc/containerd/config.toml", "containerd's config file, as containerd sees it")
	hostRoot := fs.String("host-root", "/", "where the node's root file system is mounted (a pod mounting the host at /host passes /host)")
	check := fs.Bool("check-config", true, "fail unless containerd's config_path includes --certs-dir")
	remove := fs.Bool("remove", false, "undo: delete the hosts.toml files this command wrote for the registries (by hand; the Helm chart's uninstall hook runs shoal node-cleanup)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	// A registry named without --registry would be left out silently, and
	// its pulls would bypass the agent.
	if fs.NArg() > 0 {
		return fmt.Errorf("containerd-hosts: unexpected argument %q (registries are given with --registry)", fs.Arg(0))
	}
	if len(regs) == 0 {
		return errors.New("containerd-hosts: at least one --registry is required")
	}
	parsed := make([]containerdhosts.Registry, 0, len(regs))
	for _, s := range regs {
		r, err := containerdhosts.ParseRegistry(s)
		if err != nil {
			return fmt.Errorf("containerd-hosts: %w", err)
		}
		parsed = append(parsed, r)
	}
	dir := strings.TrimRight(*hostRoot, "/") + "/" + strings.TrimLeft(*certsDir, "/")
	if *remove {
		removed, err := containerdhosts.Remove(dir, parsed)
		for _, p := range removed {
			fmt.Println("removed", p)
		}
		if err != nil {
			return fmt.Errorf("containerd-hosts: %w", err)
		}
		return nil
	}
	if *check {
		// Checked first: hosts.toml files containerd never reads would make
		// the node look configured while every pull bypasses Shoal.
		if err := containerdhosts.CheckConfig(os.DirFS(*hostRoot), *config, *certsDir); err != nil {
			return fmt.Errorf("containerd-hosts: %w", err)
		}
	}
	written, err := containerdhosts.Write(dir, parsed, *mirror)
	if err != nil {
		return fmt.Errorf("containerd-hosts: %w", err)
	}
	for _, p := range written {
		fmt.Println("wrote", p)
	}
	return nil
}
