package registry

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/distribution/distribution/v3/configuration"

	"github.com/shoalproject/shoal/internal/config"
)

// EmbeddedOptions are the few settings `shoal run` decides for the registry.
type EmbeddedOptions struct {
	DataDir       string
	Addr          string // default config.RegistryAddr
	SeederListen  string // default 127.0.0.1:6881
	TrackerURL    string
	TrackerSecret string
	HTTPSecret    string
	// ClusterSecret is the join secret the seeder shares with the agents.
	ClusterSecret string
}

// EmbeddedConfig is the configuration of the all-in-one registry:
// filesystem storage under DataDir/registry, the p2p middleware pointing at
// the embedded tracker. REGISTRY_* environment overrides still apply.
func EmbeddedConfig(o EmbeddedOptions) (*configuration.Configuration, error) {
	if o.Addr == "" {
		o.Addr = config.RegistryAddr
	}
	if o.SeederListen == "" {
		o.SeederListen = "127.0.0.1:6881"
	}
	root, err := filepath.Abs(filepath.Join(o.DataDir, "registry"))
	if err != nil {
		return nil, err
	}
	tracker := ""
	if o.TrackerURL != "" {
		tracker = fmt.Sprintf("tracker: {url: %q, secrets: [%q]}", o.TrackerURL, o.TrackerSecret)
	}
	yml := fmt.Sprintf(`version: 0.1
log: {level: info, accesslog: {disabled: true}, fields: {service: registry}}
http: {addr: %q, secret: %q}
storage:
  filesystem: {rootdirectory: %q}
  delete: {enabled: true}
middleware:
  storage:
    - name: p2p
      options:
        %s
        seeder: {listen: %q}
        cluster: {secret: %q}
`, o.Addr, o.HTTPSecret, root, tracker, o.SeederListen, o.ClusterSecret)
	return configuration.Parse(strings.NewReader(yml))
}
