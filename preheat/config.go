package preheat

import (
	"fmt"
	"net/url"
	"os"
	"path"
	"regexp"
	"slices"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/secret"
)

// Config is the preheat service configuration (configs/preheat.yml).
type Config struct {
	// Listen is the API address (jobs, nodes, webhooks, Harbor provider).
	Listen string `yaml:"listen"`
	// Redis: empty addrs selects the in-memory store (embedded mode, one
	// replica only).
	Redis RedisConfig `yaml:"redis"`
	// Cluster is membership: the join secret the agents hold too. Preheat
	// accepts heartbeats only from certificates of this cluster and calls
	// agents only over mutual TLS with them. Values may be the secret,
	// env:VAR or file:/path; PreviousSecrets are still accepted while the
	// secret rotates.
	Cluster struct {
		Secret          string   `yaml:"secret"`
		PreviousSecrets []string `yaml:"previousSecrets"`
	} `yaml:"cluster"`
	// Registry is the default registry for image references without a
	// host, e.g. http://127.0.0.1:5000.
	Registry string `yaml:"registry"`
	// Registries are the other registries jobs may name
	// (scheme://host[:port], or host[:port] for https). An image on any
	// other host is refused before a connection is made.
	Registries []string `yaml:"registries"`
	// PlainHTTPRegistries are host:port values reached over http:// when an
	// image reference names them (others use https://).
	PlainHTTPRegistries []string `yaml:"plainHTTPRegistries"`

	HeartbeatTTL time.Duration `yaml:"heartbeatTTL"`
	// HeartbeatMaxSkew is how far a heartbeat's signed timestamp may be
	// from this replica's clock.
	HeartbeatMaxSkew time.Duration `yaml:"heartbeatMaxSkew"`
	// NodeKeyRetention is how long a node id stays pinned to its key after
	// its last heartbeat; within it, only that key may use the id (an
	// operator forgets a re-imaged node with DELETE /api/v1/nodes/{id}).
	NodeKeyRetention time.Duration `yaml:"nodeKeyRetention"`
	// Retention: finished jobs and their progress expire after this.
	Retention  time.Duration `yaml:"retention"`
	JobTimeout time.Duration `yaml:"jobTimeout"`
	// FetchTimeout bounds one POST /_shoal/v1/fetch to one agent.
	FetchTimeout time.Duration `yaml:"fetchTimeout"`
	// AgentConcurrency bounds in-flight fetches per agent across all jobs.
	AgentConcurrency int `yaml:"agentConcurrency"`
	// AgentToken is the removed agent bearer token; kept only to refuse it
	// with a message naming what replaced it (cluster.secret).
	AgentToken string `yaml:"agentToken"`
	// LeaseTTL: a job whose owner replica stops renewing for this long is
	// taken over by another replica.
	LeaseTTL time.Duration `yaml:"leaseTTL"`
	// MaxBodyBytes bounds every request body.
	MaxBodyBytes int64 `yaml:"maxBodyBytes"`
	// MaxWebhookEvents bounds the events (or Harbor resources) of one
	// webhook request, MaxWebhookJobs the jobs one request may start; a
	// request over either is refused whole, before any job starts.
	MaxWebhookEvents int `yaml:"maxWebhookEvents"`
	MaxWebhookJobs   int `yaml:"maxWebhookJobs"`
	// DefaultGroups are targeted when a request names none (empty = all).
	DefaultGroups []string `yaml:"defaultGroups"`

	Policies []Policy     `yaml:"policies"`
	Harbor   HarborConfig `yaml:"harbor"`
	// APITokens, when set, are required (Bearer) on /api/v1/jobs writes and
	// webhooks; forgetting a node (DELETE /api/v1/nodes/{id}) always needs
	// one. Heartbeats authenticate with the cluster's certificates instead.
	APITokens []string `yaml:"apiTokens"`
	// Tracker is the tracker's read API, which the console's Swarms view
	// shows: URL is the tracker's base URL (e.g. http://tracker:6969) and
	// Token one of its api_tokens (the token, env:VAR or file:/path).
	// Empty URL: the view says no tracker is configured.
	Tracker TrackerConfig `yaml:"tracker"`
	// Debug.Addr, when set, serves net/http/pprof there; loopback only.
	Debug struct {
		Addr string `yaml:"addr"`
	} `yaml:"debug"`
}

// TrackerConfig reaches the tracker's read API.
type TrackerConfig struct {
	URL   string `yaml:"url"`
	Token string `yaml:"token"`
}

type RedisConfig struct {
	Addrs      []string `yaml:"addrs"`
	Username   string   `yaml:"username"`
	Password   string   `yaml:"password"`
	DB         int      `yaml:"db"`
	MasterName string   `yaml:"masterName"`
	Prefix     string   `yaml:"prefix"`
}

// Policy decides what a push (registry notification or Harbor webhook)
// preheats. All set fields must match; the first matching policy wins.
type Policy struct {
	Name string `yaml:"name"`
	// Repository is a path.Match glob, e.g. "library/*".
	Repository string `yaml:"repository"`
	// Tag is a glob; TagRegex a regular expression (anchored by the user).
	Tag       string   `yaml:"tag"`
	TagRegex  string   `yaml:"tagRegex"`
	Groups    []string `yaml:"groups"`
	Platforms []string `yaml:"platforms"`

	tagRe *regexp.Regexp
}

// HarborConfig covers Shoal acting as a Harbor P2P preheat provider.
//
// Mapping onto node groups: Harbor's Dragonfly driver sends the policy's
// extra_attrs as `scope` and `scheduler_cluster_ids`. Each cluster id is
// looked up in Clusters (id -> groups); no ids (null) means DefaultGroups
// (or every group). Scope: Shoal has no separate seed-peer tier — the
// registry itself seeds — so "all_peers" targets every node of the chosen
// groups, and "single_seed_peer"/"all_seed_peers" target only SeedGroups
// intersected with them when SeedGroups is set (else the same as
// all_peers); single_seed_peer further narrows to one live node per group.
type HarborConfig struct {
	// Tokens accepted as "Authorization: Bearer <token>" (Harbor's OAUTH
	// auth mode). Empty: no auth (Harbor's NONE mode).
	Tokens        []string         `yaml:"tokens"`
	Clusters      map[int][]string `yaml:"clusters"`
	DefaultGroups []string         `yaml:"defaultGroups"`
	SeedGroups    []string         `yaml:"seedGroups"`
}

// DefaultConfig is the embedded-mode configuration `shoal run` uses.
func DefaultConfig() Config {
	c := Config{
		Listen:           "127.0.0.1:8002",
		Registry:         "http://127.0.0.1:5000",
		HeartbeatTTL:     30 * time.Second,
		HeartbeatMaxSkew: time.Minute,
		NodeKeyRetention: 30 * 24 * time.Hour,
		MaxWebhookEvents: 100,
		MaxWebhookJobs:   20,
		Retention:        24 * time.Hour,
		JobTimeout:       30 * time.Minute,
		FetchTimeout:     10 * time.Minute,
		AgentConcurrency: 4,
		LeaseTTL:         15 * time.Second,
		MaxBodyBytes:     1 << 20,
	}
	c.Cluster.Secret = "env:SHOAL_CLUSTER_SECRET"
	return c
}

// LoadConfig reads a YAML file over DefaultConfig.
func LoadConfig(file string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(file)
	if err != nil {
		return cfg, fmt.Errorf("read preheat config: %w", err)
	}
	dec := yaml.NewDecoder(strings.NewReader(string(b)))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil {
		return cfg, fmt.Errorf("parse preheat config %s: %w", file, err)
	}
	return cfg, cfg.validate()
}

func (c *Config) validate() error {
	if c.Registry == "" {
		return fmt.Errorf("preheat config: registry is required")
	}
	if c.AgentToken != "" {
		return fmt.Errorf("preheat config: agentToken is no longer supported: preheat now calls agents over mutual TLS " +
			"as a cluster member; remove agentToken (and the agents' control.token) and set cluster.secret to the agents' join secret")
	}
	if _, err := c.clusterSecrets(); err != nil {
		return fmt.Errorf("preheat config: %w", err)
	}
	if _, err := c.registrySet(); err != nil {
		return fmt.Errorf("preheat config: %w", err)
	}
	if _, _, err := c.trackerAPI(); err != nil {
		return fmt.Errorf("preheat config: %w", err)
	}
	if c.HeartbeatMaxSkew <= 0 {
		c.HeartbeatMaxSkew = time.Minute
	}
	if c.NodeKeyRetention < 10*c.HeartbeatTTL {
		return fmt.Errorf("preheat config: nodeKeyRetention (%s) must be at least 10 x heartbeatTTL (%s): a node's pin must outlive its record", c.NodeKeyRetention, c.HeartbeatTTL)
	}
	if c.MaxWebhookEvents <= 0 {
		c.MaxWebhookEvents = 100
	}
	if c.MaxWebhookJobs <= 0 {
		c.MaxWebhookJobs = 20
	}
	if err := debugserver.ValidateAddr(c.Debug.Addr); err != nil {
		return fmt.Errorf("preheat config: debug.addr: %w", err)
	}
	if c.AgentConcurrency <= 0 {
		c.AgentConcurrency = 1
	}
	if c.MaxBodyBytes <= 0 {
		c.MaxBodyBytes = 1 << 20
	}
	for i := range c.Policies {
		p := &c.Policies[i]
		if p.Repository == "" {
			return fmt.Errorf("preheat config: policy %d (%s): repository glob is required", i, p.Name)
		}
		if _, err := path.Match(p.Repository, ""); err != nil {
			return fmt.Errorf("preheat config: policy %s: repository %q: %w", p.Name, p.Repository, err)
		}
		if p.Tag != "" {
			if _, err := path.Match(p.Tag, ""); err != nil {
				return fmt.Errorf("preheat config: policy %s: tag %q: %w", p.Name, p.Tag, err)
			}
		}
		if p.TagRegex != "" {
			re, err := regexp.Compile(p.TagRegex)
			if err != nil {
				return fmt.Errorf("preheat config: policy %s: tagRegex: %w", p.Name, err)
			}
			p.tagRe = re
		}
	}
	return nil
}

// match reports whether a push of repo:tag falls under the policy.
func (p *Policy) match(repo, tag string) bool {
	if ok, _ := path.Match(p.Repository, repo); !ok {
		return false
	}
	if p.Tag != "" {
		if ok, _ := path.Match(p.Tag, tag); !ok {
			return false
		}
	}
	if p.tagRe != nil && !p.tagRe.MatchString(tag) {
		return false
	}
	return true
}

// clusterSecrets resolves the join secret and the previous ones, current
// first.
func (c *Config) clusterSecrets() ([]string, error) {
	return secret.ResolveRotating("cluster.secret", c.Cluster.Secret, "cluster.previousSecrets", c.Cluster.PreviousSecrets)
}

// registrySet maps each configured registry's host[:port] to the base URL
// preheat and the agents reach it at: the default registry and the
// registries list. A bare host is https unless listed in
// plainHTTPRegistries or on loopback.
func (c *Config) registrySet() (map[string]string, error) {
	out := map[string]string{}
	for i, r := range append([]string{c.Registry}, c.Registries...) {
		name := "registry"
		if i > 0 {
			name = fmt.Sprintf("registries[%d]", i-1)
		}
		r = strings.TrimSuffix(strings.TrimSpace(r), "/")
		if !strings.Contains(r, "://") {
			scheme := "https://"
			if slices.Contains(c.PlainHTTPRegistries, r) || strings.HasPrefix(r, "127.") || strings.HasPrefix(r, "localhost") {
				scheme = "http://"
			}
			r = scheme + r
		}
		u, err := url.Parse(r)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || (u.Path != "" && u.Path != "/") || u.User != nil {
			return nil, fmt.Errorf("%s %q: want scheme://host[:port]", name, r)
		}
		host := strings.ToLower(u.Host)
		if _, dup := out[host]; !dup {
			out[host] = u.Scheme + "://" + u.Host
		}
	}
	return out, nil
}

// trackerAPI returns the tracker's base URL and resolved token, or "" when
// none is configured.
func (c *Config) trackerAPI() (base, token string, err error) {
	if c.Tracker.URL == "" {
		if c.Tracker.Token != "" {
			return "", "", fmt.Errorf("tracker.token is set but tracker.url is not")
		}
		return "", "", nil
	}
	u, err := url.Parse(strings.TrimSuffix(c.Tracker.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		// The value is not echoed: it may carry credentials.
		return "", "", fmt.Errorf("tracker.url: want http(s)://host[:port][/path] (the tracker's base URL, no credentials, query or fragment)")
	}
	tok, err := secret.Resolve("tracker.token", c.Tracker.Token)
	if err != nil {
		return "", "", fmt.Errorf("%w (one of the tracker's api_tokens)", err)
	}
	return u.String(), tok, nil
}
