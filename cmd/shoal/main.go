// Command shoal is one binary for every Shoal component: a subcommand per
// component (registry, tracker, agent, preheat) and `run`, which starts them
// all in one process with embedded defaults.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sort"
	"syscall"

	"github.com/sirupsen/logrus"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

// command is one subcommand. Each component's file registers its own in init,
// so adding a component never touches this file.
type command struct {
	summary string
	run     func(ctx context.Context, args []string) error
}

var commands = map[string]command{}

func register(name string, c command) {
	if _, dup := commands[name]; dup {
		panic("shoal: command registered twice: " + name)
	}
	commands[name] = c
}

func init() {
	register("version", command{
		summary: "print the version",
		run: func(context.Context, []string) error {
			fmt.Println("shoal", version)
			return nil
		},
	})
}

func usage() {
	fmt.Fprintf(os.Stderr, "Usage: shoal <command> [flags]\n\nCommands:\n")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(os.Stderr, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintf(os.Stderr, "\nRun 'shoal <command> -h' for the flags of a command.\n")
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	name := os.Args[1]
	if name == "-h" || name == "--help" || name == "help" {
		usage()
		return
	}
	c, ok := commands[name]
	if !ok {
		fmt.Fprintf(os.Stderr, "shoal: unknown command %q\n\n", name)
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := c.run(ctx, os.Args[2:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return
		}
		logrus.WithError(err).Errorf("shoal %s failed", name)
		os.Exit(1)
	}
}
