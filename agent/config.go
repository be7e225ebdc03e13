// Package agent is Shoal's node daemon: a pull-through registry mirror for
// containerd and Docker that keeps a content-addressed blob cache on disk and
// fetches blobs from a BitTorrent swarm of other nodes when the upstream
// registry offers a torrent, falling back to plain HTTP otherwise.
package agent

import (
	"fmt"
	"net"
	"net/url"
	"os"
	"strings"
	"time"

	yaml "go.yaml.in/yaml/v2"

	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/secret"
)

// Upstream is one registry the mirror can pull from.
type Upstream struct {
	// Host is what containerd sends as ?ns=<host> (e.g. "docker.io",
	// "registry.example.com:5000"). Optional when the upstream is only the
	// default.
	Host string `yaml:"host"`
	// URL is where the registry answers, e.g. https://registry-1.docker.io.
	URL string `yaml:"url"`
	// Default marks the upstream used when a request carries no ?ns= (Docker
	// style 127.0.0.1:65001/<repo> addressing, Docker registry-mirrors).
	Default bool `yaml:"default"`
	// Username/Password are the agent's own credentials, used only for
	// fetches the agent starts itself (preheat requests without headers).
	// Client pulls always use the client's Authorization.
	Username string `yaml:"username"`
	Password string `yaml:"password"`
}

// Config is the agent's configuration (configs/agent.yml documents it).
type Config struct {
	Node struct {
		ID     string   `yaml:"id"`
		Groups []string `yaml:"groups"`
	} `yaml:"node"`
	// Cluster is membership: the join secret every node, the registry's
	// seeder and preheat hold (internal/cluster). Values may be the secret,
	// env:VAR or file:/path. PreviousSecrets are still accepted from
	// others while the secret rotates.
	Cluster struct {
		Secret          string   `yaml:"secret"`
		PreviousSecrets []string `yaml:"previousSecrets"`
	} `yaml:"cluster"`
	Mirror struct {
		Addr string `yaml:"addr"`
	} `yaml:"mirror"`
	// Control is preheat's way in: mutual TLS with the cluster's
	// certificates, nothing else. Advertise is the https://host:port preheat
	// reaches it at (default: https:// + Addr).
	Control struct {
		Addr      string `yaml:"addr"`
		Advertise string `yaml:"advertise"`
		// Token is the removed bearer token; kept only to refuse it with a
		// message naming what replaced it.
		Token string `yaml:"token"`
	} `yaml:"control"`
	Upstreams []Upstream `yaml:"upstreams"`
	Cache     struct {
		Dir      string `yaml:"dir"`
		MaxBytes int64  `yaml:"maxBytes"`
		// AuthTTL is how long an upstream's "this credential may read this
		// blob" answer is reused before asking again.
		AuthTTL time.Duration `yaml:"authTTL"`
	} `yaml:"cache"`
	P2P struct {
		Enabled bool `yaml:"enabled"`
		// Listen is the BitTorrent TCP listen address (host:port).
		Listen string `yaml:"listen"`
		// AdvertiseIP is the IPv4 peers should dial, when it differs from
		// the address the tracker sees.
		AdvertiseIP string `yaml:"advertiseIP"`
		// DataListen is where this node serves piece bytes to other nodes
		// over HTTP (host:port); empty = the host of Listen, any port. Its
		// port travels to the nodes over the BitTorrent connection.
		DataListen string `yaml:"dataListen"`
		// UploadSlots is how many piece requests of other nodes the data
		// path serves at once; the rest are told to ask another node.
		UploadSlots int `yaml:"uploadSlots"`
		// StallTimeout: nothing arrives for this long (and no fetch of
		// this node's is under way) → every missing piece comes from the
		// registry; twice as long → plain HTTP fallback.
		StallTimeout time.Duration `yaml:"stallTimeout"`
		// Deadline bounds a whole swarm download before HTTP takes over.
		Deadline time.Duration `yaml:"deadline"`
		// SeedTime is how long a downloaded blob keeps seeding.
		SeedTime time.Duration `yaml:"seedTime"`
		// Rate limits in bytes/s; 0 means unlimited.
		UploadBytesPerSec   int64 `yaml:"uploadBytesPerSec"`
		DownloadBytesPerSec int64 `yaml:"downloadBytesPerSec"`
	} `yaml:"p2p"`
	// UpstreamTimeouts bound every call to an upstream registry, so that a
	// hung one fails the request (the download resumes or fails) instead
	// of pinning it and every requester joined to it.
	UpstreamTimeouts struct {
		Dial           time.Duration `yaml:"dial"`
		TLSHandshake   time.Duration `yaml:"tlsHandshake"`
		ResponseHeader time.Duration `yaml:"responseHeader"`
		// IdleRead ends a response whose body delivers nothing this long.
		IdleRead time.Duration `yaml:"idleRead"`
	} `yaml:"upstreamTimeouts"`
	Preheat struct {
		URL      string        `yaml:"url"`
		Interval time.Duration `yaml:"interval"`
	} `yaml:"preheat"`
	// Debug.Addr, when set, serves net/http/pprof there; loopback only.
	Debug struct {
		Addr string `yaml:"addr"`
	} `yaml:"debug"`
	Log struct {
		Level string `yaml:"level"`
	} `yaml:"log"`
}

// DefaultConfig is a working single-node configuration: mirror on
// 127.0.0.1:65001 in front of a registry on 127.0.0.1:5000.
func DefaultConfig() Config {
	var c Config
	host, _ := os.Hostname()
	c.Node.ID = host
	c.Cluster.Secret = "env:SHOAL_CLUSTER_SECRET"
	c.Mirror.Addr = "127.0.0.1:65001"
	c.Control.Addr = "127.0.0.1:65002"
	c.Upstreams = []Upstream{{Host: "127.0.0.1:5000", URL: "http://127.0.0.1:5000", Default: true}}
	c.Cache.Dir = "./data/agent"
	c.Cache.MaxBytes = 20 << 30
	c.Cache.AuthTTL = 30 * time.Second
	c.P2P.Enabled = true
	c.P2P.Listen = "0.0.0.0:0"
	c.P2P.StallTimeout = 5 * time.Second
	c.P2P.UploadSlots = 4
	c.P2P.Deadline = 10 * time.Minute
	c.P2P.SeedTime = time.Hour
	c.Preheat.Interval = 10 * time.Second
	c.UpstreamTimeouts.Dial = 10 * time.Second
	c.UpstreamTimeouts.TLSHandshake = 10 * time.Second
	c.UpstreamTimeouts.ResponseHeader = 30 * time.Second
	c.UpstreamTimeouts.IdleRead = 30 * time.Second
	c.Log.Level = "info"
	return c
}

// LoadConfig reads a YAML file over DefaultConfig.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return c, fmt.Errorf("read agent config: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return c, fmt.Errorf("parse agent config %s: %w", path, err)
	}
	return c, c.Validate()
}

// Validate checks the fields whose mistakes would otherwise surface late.
func (c *Config) Validate() error {
	if len(c.Upstreams) == 0 {
		return fmt.Errorf("agent config: at least one upstream is required")
	}
	defaults := 0
	for i, u := range c.Upstreams {
		pu, err := url.Parse(u.URL)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("agent config: upstream %d: url %q must be http(s)://host[:port]", i, u.URL)
		}
		c.Upstreams[i].URL = strings.TrimRight(u.URL, "/")
		if u.Host == "" {
			c.Upstreams[i].Host = pu.Host
		}
		if u.Default {
			defaults++
		}
	}
	if defaults > 1 {
		return fmt.Errorf("agent config: more than one default upstream")
	}
	if defaults == 0 {
		c.Upstreams[0].Default = true
	}
	if c.Cache.Dir == "" {
		return fmt.Errorf("agent config: cache.dir is required")
	}
	if c.Cache.MaxBytes <= 0 {
		return fmt.Errorf("agent config: cache.maxBytes must be > 0")
	}
	if c.P2P.UploadSlots <= 0 {
		return fmt.Errorf("agent config: p2p.uploadSlots must be > 0")
	}
	if c.P2P.StallTimeout <= 0 {
		c.P2P.StallTimeout = 5 * time.Second
	}
	if c.P2P.Deadline <= 0 {
		c.P2P.Deadline = 10 * time.Minute
	}
	if c.Preheat.Interval <= 0 {
		c.Preheat.Interval = 10 * time.Second
	}
	for _, d := range []*time.Duration{&c.UpstreamTimeouts.Dial, &c.UpstreamTimeouts.TLSHandshake,
		&c.UpstreamTimeouts.ResponseHeader, &c.UpstreamTimeouts.IdleRead} {
		if *d < 0 {
			return fmt.Errorf("agent config: upstreamTimeouts must not be negative")
		}
	}
	def := DefaultConfig().UpstreamTimeouts
	if c.UpstreamTimeouts.Dial == 0 {
		c.UpstreamTimeouts.Dial = def.Dial
	}
	if c.UpstreamTimeouts.TLSHandshake == 0 {
		c.UpstreamTimeouts.TLSHandshake = def.TLSHandshake
	}
	if c.UpstreamTimeouts.ResponseHeader == 0 {
		c.UpstreamTimeouts.ResponseHeader = def.ResponseHeader
	}
	if c.UpstreamTimeouts.IdleRead == 0 {
		c.UpstreamTimeouts.IdleRead = def.IdleRead
	}
	if err := debugserver.ValidateAddr(c.Debug.Addr); err != nil {
		return fmt.Errorf("agent config: debug.addr: %w", err)
	}
	if _, err := c.clusterSecrets(); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	if c.Control.Token != "" {
		return fmt.Errorf("agent config: control.token is no longer supported: the control API now accepts only " +
			"cluster members over mutual TLS; remove control.token (and preheat's agentToken) and give the agents and " +
			"preheat the same cluster.secret")
	}
	if c.Control.Addr != "" {
		if c.Control.Advertise == "" {
			c.Control.Advertise = "https://" + c.Control.Addr
		}
		adv, err := nodeapi.CheckAddress(c.Control.Advertise)
		if err != nil {
			return fmt.Errorf("agent config: control.advertise: %w (the control API is TLS only)", err)
		}
		c.Control.Advertise = adv
		if u, _ := url.Parse(adv); c.Preheat.URL != "" && u != nil {
			if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
				return fmt.Errorf("agent config: control.advertise %s is not an address preheat can reach; set it to this node's https://<ip>:<port>", adv)
			}
		}
	}
	return nil
}

// clusterSecrets resolves the join secret and the previous ones, current
// first.
func (c *Config) clusterSecrets() ([]string, error) {
	return secret.ResolveRotating("cluster.secret", c.Cluster.Secret, "cluster.previousSecrets", c.Cluster.PreviousSecrets)
}
