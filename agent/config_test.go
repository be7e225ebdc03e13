package agent

import (
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/secret"
)

// The shipped example must load as-is (strict: unknown keys are errors).
func TestShippedConfigLoads(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", secret.Generate())
	cfg, err := LoadConfig("../configs/agent.yml")
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Mirror.Addr != "127.0.0.1:65001" || cfg.Control.Addr != "127.0.0.1:65002" || cfg.Preheat.Interval != 10*time.Second {
		t.Errorf("unexpected values: %+v", cfg)
	}
	if len(cfg.Upstreams) != 1 || !cfg.Upstreams[0].Default || cfg.Node.Groups[0] != "zone-a" {
		t.Errorf("upstreams/groups: %+v %+v", cfg.Upstreams, cfg.Node.Groups)
	}
}

func TestConfigValidate(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", secret.Generate())
	for name, mut := range map[string]func(*Config){
		"no cluster secret":    func(c *Config) { c.Cluster.Secret = "" },
		"placeholder secret":   func(c *Config) { c.Cluster.Secret = "change-me-cluster-secret-0123456789abcdef" },
		"short secret":         func(c *Config) { c.Cluster.Secret = "0123456789" },
		"placeholder previous": func(c *Config) { c.Cluster.PreviousSecrets = []string{"change-me-previous-0123456789abcdefghij"} },
		"no upstream":          func(c *Config) { c.Upstreams = nil },
		"bad url":              func(c *Config) { c.Upstreams[0].URL = "ftp://x" },
		"two defaults":         func(c *Config) { c.Upstreams = append(c.Upstreams, Upstream{URL: "http://b", Default: true}) },
		"no cache dir":         func(c *Config) { c.Cache.Dir = "" },
		"no limit":             func(c *Config) { c.Cache.MaxBytes = 0 },
		"control token":        func(c *Config) { c.Control.Token = "old-bearer-token" },
		"plain http advertise": func(c *Config) { c.Control.Advertise = "http://10.0.0.1:65002" },
		"advertise with path":  func(c *Config) { c.Control.Advertise = "https://10.0.0.1:65002/x" },
		"unspecified advertise": func(c *Config) {
			c.Control.Addr, c.Preheat.URL = "0.0.0.0:65002", "http://preheat:8002"
		},
	} {
		c := DefaultConfig()
		mut(&c)
		if err := c.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	c := DefaultConfig()
	c.Upstreams = []Upstream{{URL: "https://registry.example.com/"}}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if u := c.Upstreams[0]; u.Host != "registry.example.com" || u.URL != "https://registry.example.com" || !u.Default {
		t.Errorf("defaults not filled: %+v", u)
	}
}
