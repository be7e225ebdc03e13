// Package agent is Shoal's node daemon: a pull-through registry mirror for
// containerd and Docker that keeps a content-addressed blob cache on disk and
// fetches blobs from a BitTorrent swarm of other nodes when the upstream
// registry offers a torrent, falling back to plain HTTP otherwise.
package agent

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/secret"
)

// Upstream is one registry the mirror can pull from.
type Upstream struct {
	// Host is what containerd sends as ?ns=<host> (e.g. "docker.io",
	// "registry.example.com:5000"). Optional: the URL's host by default.
	Host string `yaml:"host"`
	// URL is where the registry answers, e.g. https://registry-1.docker.io.
	URL string `yaml:"url"`
	// Default marks the upstream used when a request carries no ?ns= (Docker
	// style 127.0.0.1:65001/<repo> addressing, Docker registry-mirrors).
	// Without one, the first upstream is the default.
	Default bool `yaml:"default"`
	// Username/Password are the agent's own credentials, used only for
	// fetches the agent starts itself (preheat requests without headers).
	// Client pulls always use the client's Authorization.
	// Password is the value, env:VAR or file:/path, resolved when the
	// config loads (config.Credential: never printed).
	Username string            `yaml:"username"`
	Password config.Credential `yaml:"password"`
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
	// Mirror is the agent's main listener (the one Serve is handed): the
	// address containerd and Docker pull through. It stays mirror.addr,
	// not a top-level addr, because the agent has several listeners of
	// equal standing in its file (control, p2p, metrics) and "addr" alone
	// would not say which of them it is.
	Mirror struct {
		Addr string `yaml:"addr"`
	} `yaml:"mirror"`
	// Control is preheat's way in: mutual TLS with the cluster's
	// certificates, nothing else. Advertise is the https://host:port preheat
	// reaches it at (default: https:// + Addr).
	Control struct {
		Addr      string `yaml:"addr"`
		Advertise string `yaml:"advertise"`
	} `yaml:"control"`
	// Metrics is the optional listener Prometheus scrapes (/metrics and
	// /healthz only). Beyond loopback it demands Token as a bearer token.
	Metrics struct {
		Addr string `yaml:"addr"`
		// Token may be the value, env:VAR or file:/path; at least 32 bytes,
		// checked when the config loads (config.Secret).
		Token config.Secret `yaml:"token"`
	} `yaml:"metrics"`
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
		// Listen is the BitTorrent TCP listen address (host:port), key
		// p2p.addr like every listener's.
		Listen string `yaml:"addr"`
		// AdvertiseIP is the IPv4 peers should dial, when it differs from
		// the address the tracker sees.
		AdvertiseIP string `yaml:"advertiseIP"`
		// DataListen (p2p.dataAddr) is where this node serves piece bytes
		// to other nodes over HTTP (host:port); empty = the host of Listen,
		// any port. Its port travels to the nodes over the BitTorrent
		// connection.
		DataListen string `yaml:"dataAddr"`
		// UploadSlots is how many piece requests of other nodes the data
		// path serves at once; the rest are told to ask another node.
		UploadSlots int `yaml:"uploadSlots"`
		// StallTimeout is the least stall bound (sched.StallBound): a
		// blob that gains no piece for the bound → every missing piece
		// comes from the registry, this node's share first, whatever its
		// connections; no piece and no registry byte for another bound →
		// plain HTTP fallback.
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
	Debug config.Debug `yaml:"debug"`
	Log   config.Log   `yaml:"log"`
}

// renamed are the keys the agent no longer reads, with what replaced them.
var renamed = config.Renamed{
	"control.token": "the control API accepts only cluster members over mutual TLS; remove control.token " +
		"(and preheat's agentToken) and give the agents and preheat the same cluster.secret",
	"p2p.listen":     "use p2p.addr (every listener key is addr)",
	"p2p.dataListen": "use p2p.dataAddr (every listener key is addr)",
}

// DefaultConfig is a working single-node configuration: mirror on
// 127.0.0.1:65001 in front of a registry on 127.0.0.1:5000.
func DefaultConfig() Config {
	var c Config
	host, _ := os.Hostname()
	c.Node.ID = host
	c.Cluster.Secret = "env:SHOAL_CLUSTER_SECRET"
	c.Mirror.Addr = config.MirrorAddr
	c.Control.Addr = config.ControlAddr
	c.Upstreams = []Upstream{{Host: config.RegistryAddr, URL: "http://" + config.RegistryAddr, Default: true}}
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
	c.Log = config.DefaultLog()
	return c
}

// LoadConfig reads a YAML file over DefaultConfig and validates it.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	if err := config.Load("agent config", path, &c, renamed); err != nil {
		return c, err
	}
	return c, c.Validate()
}

// Validate reports the first setting whose mistake would otherwise surface
// late. It changes nothing: the values derived from the config (an
// upstream's host, the default upstream, the advertised control address)
// are computed by normalized.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("agent config: %w", err)
	}
	return nil
}

func (c Config) validate() error {
	if len(c.Upstreams) == 0 {
		return errors.New("at least one upstream is required")
	}
	defaults := 0
	for i, u := range c.Upstreams {
		if err := u.Password.Check(fmt.Sprintf("upstreams[%d].password", i)); err != nil {
			return err
		}
		pu, err := url.Parse(u.URL)
		if err != nil || (pu.Scheme != "http" && pu.Scheme != "https") || pu.Host == "" {
			return fmt.Errorf("upstreams[%d].url %q must be http(s)://host[:port]", i, u.URL)
		}
		if u.Default {
			defaults++
		}
	}
	if defaults > 1 {
		return errors.New("more than one upstream has default: true")
	}
	switch {
	case c.Mirror.Addr == "":
		return errors.New("mirror.addr is required")
	case c.Cache.Dir == "":
		return errors.New("cache.dir is required")
	case c.Cache.MaxBytes <= 0:
		return errors.New("cache.maxBytes must be > 0")
	case c.Cache.AuthTTL < 0:
		return errors.New("cache.authTTL must not be negative")
	case c.P2P.UploadSlots <= 0:
		return errors.New("p2p.uploadSlots must be > 0")
	case c.P2P.StallTimeout <= 0:
		return errors.New("p2p.stallTimeout must be > 0")
	case c.P2P.Deadline <= 0:
		return errors.New("p2p.deadline must be > 0")
	case c.P2P.SeedTime < 0:
		return errors.New("p2p.seedTime must not be negative")
	case c.P2P.UploadBytesPerSec < 0 || c.P2P.DownloadBytesPerSec < 0:
		return errors.New("p2p.uploadBytesPerSec and p2p.downloadBytesPerSec must not be negative (0 is unlimited)")
	case c.Preheat.Interval <= 0:
		return errors.New("preheat.interval must be > 0")
	}
	t := c.UpstreamTimeouts
	if t.Dial <= 0 || t.TLSHandshake <= 0 || t.ResponseHeader <= 0 || t.IdleRead <= 0 {
		return errors.New("upstreamTimeouts: dial, tlsHandshake, responseHeader and idleRead must be > 0")
	}
	if err := c.Log.Validate(); err != nil {
		return err
	}
	if err := c.Debug.Validate(); err != nil {
		return err
	}
	if _, err := c.clusterSecrets(); err != nil {
		return err
	}
	if _, err := c.metricsToken(); err != nil {
		return err
	}
	if c.Control.Addr != "" {
		adv, err := c.advertise()
		if err != nil {
			return fmt.Errorf("control.advertise: %w (the control API is TLS only)", err)
		}
		if u, _ := url.Parse(adv); c.Preheat.URL != "" && u != nil {
			if ip := net.ParseIP(u.Hostname()); ip != nil && ip.IsUnspecified() {
				return fmt.Errorf("control.advertise %s is not an address preheat can reach; set it to this node's https://<ip>:<port>", adv)
			}
		}
	}
	return nil
}

// normalized is c with its derived values filled in: upstream URLs without
// a trailing slash, each upstream's host (its URL's by default), one
// default upstream (the first unless one says so) and the control API's
// advertised address. c must have passed Validate.
func (c Config) normalized() Config {
	ups := make([]Upstream, len(c.Upstreams))
	copy(ups, c.Upstreams)
	hasDefault := false
	for i := range ups {
		ups[i].URL = strings.TrimRight(ups[i].URL, "/")
		if ups[i].Host == "" {
			if pu, err := url.Parse(ups[i].URL); err == nil {
				ups[i].Host = pu.Host
			}
		}
		hasDefault = hasDefault || ups[i].Default
	}
	if !hasDefault && len(ups) > 0 {
		ups[0].Default = true
	}
	c.Upstreams = ups
	if c.Control.Addr != "" {
		c.Control.Advertise, _ = c.advertise()
	}
	return c
}

// advertise is the control API's address as preheat should call it.
func (c Config) advertise() (string, error) {
	adv := c.Control.Advertise
	if adv == "" {
		adv = "https://" + c.Control.Addr
	}
	return nodeapi.CheckAddress(adv)
}

// clusterSecrets resolves the join secret and the previous ones, current
// first.
func (c Config) clusterSecrets() ([]string, error) {
	return secret.ResolveRotating("cluster.secret", c.Cluster.Secret, "cluster.previousSecrets", c.Cluster.PreviousSecrets)
}

// metricsToken resolves metrics.token ("" when none is set). A metrics
// listener beyond loopback must have one: the agent's metrics name the
// images a node pulls and how much it moves, which is no one else's to read.
func (c Config) metricsToken() (string, error) {
	if c.Metrics.Addr == "" {
		if c.Metrics.Token.IsSet() {
			return "", errors.New("metrics.token is set but metrics.addr is not: the token would guard nothing")
		}
		return "", nil
	}
	if _, _, err := net.SplitHostPort(c.Metrics.Addr); err != nil {
		return "", fmt.Errorf("metrics.addr %q: want host:port: %w", c.Metrics.Addr, err)
	}
	if !c.Metrics.Token.IsSet() {
		if !isLoopbackAddr(c.Metrics.Addr) {
			return "", fmt.Errorf("metrics.addr %s listens beyond loopback: set metrics.token (a bearer token of at least %d bytes Prometheus sends), or listen on 127.0.0.1", c.Metrics.Addr, secret.MinLen)
		}
		return "", nil
	}
	if err := c.Metrics.Token.Check("metrics.token"); err != nil {
		return "", err
	}
	return c.Metrics.Token.Value(), nil
}

// isLoopbackAddr reports whether host:port names a loopback host only.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.IsLoopback()
}
