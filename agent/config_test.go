package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
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

// An empty file is the defaults; old and misspelt keys fail naming the key
// and what to write instead.
func TestLoadConfigKeys(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", secret.Generate())
	for _, tc := range []struct{ name, in, wantErr string }{
		{"empty file", "", ""},
		{"log block", "log: {level: debug, format: json}\n", ""},
		{"control.token removed", "control:\n  token: abc\n", `key "control.token" is no longer read: the control API accepts only cluster members`},
		{"p2p.listen renamed", "p2p:\n  listen: 0.0.0.0:6881\n", `key "p2p.listen" is no longer read: use p2p.addr`},
		{"p2p.dataListen renamed", "p2p:\n  dataListen: 0.0.0.0:6882\n", `key "p2p.dataListen" is no longer read: use p2p.dataAddr`},
		{"p2p listeners", "p2p:\n  addr: 0.0.0.0:6881\n  dataAddr: 0.0.0.0:6882\n", ""},
		{"unknown key", "mirror:\n  adr: x\n", `unknown key "adr"`},
		{"old log key", "log_level: debug\n", `unknown key "log_level"`},
		{"bad log format", "log: {format: xml}\n", "log.format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "agent.yml")
			if err := os.WriteFile(p, []byte(tc.in), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadConfig(p)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatal(err)
				}
				if tc.in == "" && !reflect.DeepEqual(cfg, DefaultConfig()) {
					t.Errorf("empty file: %+v", cfg)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
			}
		})
	}
}

func TestConfigValidate(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", secret.Generate())
	token := secret.Generate()
	for _, tc := range []struct {
		name  string
		mut   func(*Config)
		valid bool
	}{
		{"defaults", func(*Config) {}, true},
		{"no cluster secret", func(c *Config) { c.Cluster.Secret = "" }, false},
		{"placeholder secret", func(c *Config) { c.Cluster.Secret = "change-me-cluster-secret-0123456789abcdef" }, false},
		{"short secret", func(c *Config) { c.Cluster.Secret = "0123456789" }, false},
		{"placeholder previous", func(c *Config) { c.Cluster.PreviousSecrets = []string{"change-me-previous-0123456789abcdefghij"} }, false},
		{"no upstream", func(c *Config) { c.Upstreams = nil }, false},
		{"bad url", func(c *Config) { c.Upstreams[0].URL = "ftp://x" }, false},
		{"two defaults", func(c *Config) { c.Upstreams = append(c.Upstreams, Upstream{URL: "http://b", Default: true}) }, false},
		{"no mirror addr", func(c *Config) { c.Mirror.Addr = "" }, false},
		{"no cache dir", func(c *Config) { c.Cache.Dir = "" }, false},
		{"no limit", func(c *Config) { c.Cache.MaxBytes = 0 }, false},
		{"zero stall timeout", func(c *Config) { c.P2P.StallTimeout = 0 }, false},
		{"zero deadline", func(c *Config) { c.P2P.Deadline = 0 }, false},
		{"zero heartbeat interval", func(c *Config) { c.Preheat.Interval = 0 }, false},
		{"zero idle read", func(c *Config) { c.UpstreamTimeouts.IdleRead = 0 }, false},
		{"bad log level", func(c *Config) { c.Log.Level = "loud" }, false},
		{"debug beyond loopback", func(c *Config) { c.Debug.Addr = "0.0.0.0:6060" }, false},
		{"plain http advertise", func(c *Config) { c.Control.Advertise = "http://10.0.0.1:65002" }, false},
		{"advertise with path", func(c *Config) { c.Control.Advertise = "https://10.0.0.1:65002/x" }, false},
		{"unspecified advertise", func(c *Config) { c.Control.Addr, c.Preheat.URL = "0.0.0.0:65002", "http://preheat:8002" }, false},
		{"metrics on loopback", func(c *Config) { c.Metrics.Addr = "127.0.0.1:9100" }, true},
		{"metrics beyond loopback without token", func(c *Config) { c.Metrics.Addr = "0.0.0.0:9100" }, false},
		{"metrics beyond loopback with token", func(c *Config) { c.Metrics.Addr, c.Metrics.Token = "0.0.0.0:9100", config.NewSecret(token) }, true},
		{"metrics short token", func(c *Config) { c.Metrics.Addr, c.Metrics.Token = "0.0.0.0:9100", config.NewSecret("short") }, false},
		{"metrics token without addr", func(c *Config) { c.Metrics.Token = config.NewSecret(token) }, false},
		{"metrics addr without port", func(c *Config) { c.Metrics.Addr = "127.0.0.1" }, false},
	} {
		c := DefaultConfig()
		tc.mut(&c)
		if err := c.Validate(); (err == nil) != tc.valid {
			t.Errorf("%s: err = %v, want valid=%v", tc.name, err, tc.valid)
		}
	}
}

// Validate changes nothing; normalized derives host, URL, default upstream
// and the advertised control address on a copy.
func TestConfigNormalized(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", secret.Generate())
	c := DefaultConfig()
	c.Upstreams = []Upstream{{URL: "https://registry.example.com/"}, {Host: "docker.io", URL: "https://registry-1.docker.io"}}
	c.Control.Addr = "10.0.0.1:65002"
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if u := c.Upstreams[0]; u.Host != "" || u.URL != "https://registry.example.com/" || u.Default || c.Control.Advertise != "" {
		t.Errorf("Validate changed the config: %+v %q", u, c.Control.Advertise)
	}
	n := c.normalized()
	if u := n.Upstreams[0]; u.Host != "registry.example.com" || u.URL != "https://registry.example.com" || !u.Default {
		t.Errorf("first upstream: %+v", u)
	}
	if n.Upstreams[1].Default || n.Control.Advertise != "https://10.0.0.1:65002" {
		t.Errorf("normalized: %+v %q", n.Upstreams[1], n.Control.Advertise)
	}
	if c.Upstreams[0].Host != "" {
		t.Error("normalized changed its receiver's upstreams")
	}
}
