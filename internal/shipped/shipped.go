// Package shipped loads a configuration file the project ships (configs/,
// the Helm chart's rendered configs) the way its component does at start,
// secrets included, so one test can hold every shipped file to the rules:
// no unresolved reference, no weak secret, no open listener.
package shipped

import (
	"errors"
	"fmt"

	"github.com/shoalproject/shoal/agent"
	"github.com/shoalproject/shoal/driver"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/preheat"
	"github.com/shoalproject/shoal/registry"
	"github.com/shoalproject/shoal/tracker"
)

// Components are the ones Load knows, by the name their file carries.
var Components = []string{"agent", "tracker", "preheat", "registry"}

// Load reads path as component's configuration and resolves every secret
// the component resolves when it starts.
func Load(component, path string) error {
	switch component {
	case "agent":
		_, err := agent.LoadConfig(path)
		return err
	case "tracker":
		_, err := tracker.LoadConfig(path)
		return err
	case "preheat":
		_, err := preheat.LoadConfig(path)
		return err
	case "registry":
		return loadRegistry(path)
	}
	return fmt.Errorf("shipped: unknown component %q", component)
}

// loadRegistry is distribution's config.yml plus the p2p middleware's
// options, with the secrets the registry resolves at start (its New does
// more: storage, listeners).
func loadRegistry(path string) error {
	cfg, err := registry.LoadConfig(path)
	if err != nil {
		return err
	}
	mws := cfg.Middleware["storage"]
	if len(mws) != 1 || mws[0].Name != "p2p" {
		return errors.New("registry config: want the p2p storage middleware")
	}
	o, err := driver.ParseOptions(mws[0].Options)
	if err != nil {
		return err
	}
	if _, err := o.Cluster.Secrets(); err != nil {
		return err
	}
	if _, err := secret.ResolveAll("p2p secrets", o.Secrets); err != nil {
		return err
	}
	if _, err := secret.ResolveAll("p2p tracker.secrets", o.Tracker.Secrets); err != nil {
		return err
	}
	return nil
}
