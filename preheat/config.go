package preheat

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/preheat/harbor"
	"github.com/shoalproject/shoal/preheat/webhook"
)

// Config is the preheat service configuration (configs/preheat.yml). The
// file keeps most keys at its top level; here they are grouped by what
// reads them (the inlined blocks), and their fields are promoted, so
// cfg.HeartbeatTTL reads as before.
type Config struct {
	APIConfig `yaml:",inline"`
	Log       config.Log `yaml:"log"`
	// Debug.Addr, when set, serves net/http/pprof there; loopback only.
	Debug config.Debug `yaml:"debug"`
	// Redis: no addrs selects the in-memory store (embedded mode, one
	// replica only).
	Redis config.Redis `yaml:"redis"`
	// Cluster is membership: the join secret the agents hold too. Preheat
	// accepts heartbeats only from certificates of this cluster and calls
	// agents only over mutual TLS with them. Values may be the secret,
	// env:VAR or file:/path; PreviousSecrets are still accepted while the
	// secret rotates.
	Cluster          ClusterConfig `yaml:"cluster"`
	RegistriesConfig `yaml:",inline"`
	NodesConfig      `yaml:",inline"`
	JobsConfig       `yaml:",inline"`
	PushConfig       `yaml:",inline"`
	Harbor           HarborConfig `yaml:"harbor"`
	// Tracker is the tracker's read API, which the console's Swarms view
	// shows: URL is the tracker's base URL (e.g. http://tracker:6969) and
	// Token one of its API tokens (the token, env:VAR or file:/path).
	// Empty URL: the view says no tracker is configured.
	Tracker TrackerConfig `yaml:"tracker"`
}

// APIConfig is where the API listens and who may call it (top-level keys).
type APIConfig struct {
	// Addr is the API address (jobs, nodes, webhooks, Harbor provider,
	// console, /metrics, /healthz).
	Addr string `yaml:"addr"`
	// APITokens, when set, are required (Bearer) on every /api/v1 call
	// but heartbeats (which authenticate with the cluster's certificates),
	// and are what the console logs in with; forgetting a node (DELETE
	// /api/v1/nodes/{id}) always needs one. Without them preheat must
	// listen on loopback, and the API answers only loopback clients asking
	// for a loopback host with same-origin JSON writes (docs/security.md).
	APITokens config.Tokens `yaml:"apiTokens"`
	// MaxBodyBytes bounds every request body.
	MaxBodyBytes int64 `yaml:"maxBodyBytes"`
}

// RegistriesConfig is where jobs may fetch from (top-level keys).
type RegistriesConfig struct {
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
}

// NodesConfig is how heartbeats are judged (top-level keys).
type NodesConfig struct {
	HeartbeatTTL time.Duration `yaml:"heartbeatTTL"`
	// HeartbeatMaxSkew is how far a heartbeat's signed timestamp may be
	// from this replica's clock.
	HeartbeatMaxSkew time.Duration `yaml:"heartbeatMaxSkew"`
	// NodeKeyRetention is how long a node id stays pinned to its key after
	// its last heartbeat; within it, only that key may use the id (an
	// operator forgets a re-imaged node with DELETE /api/v1/nodes/{id}).
	NodeKeyRetention time.Duration `yaml:"nodeKeyRetention"`
}

// JobsConfig is how jobs run (top-level keys).
type JobsConfig struct {
	// Retention: finished jobs and their progress expire after this.
	Retention  time.Duration `yaml:"retention"`
	JobTimeout time.Duration `yaml:"jobTimeout"`
	// FetchTimeout bounds one POST /_shoal/v1/fetch to one agent.
	FetchTimeout time.Duration `yaml:"fetchTimeout"`
	// AgentConcurrency bounds in-flight fetches per agent across all jobs.
	AgentConcurrency int `yaml:"agentConcurrency"`
	// LeaseTTL: a job whose owner replica stops renewing for this long is
	// taken over by another replica.
	LeaseTTL time.Duration `yaml:"leaseTTL"`
	// MaxActiveJobs bounds the unfinished jobs across replicas: a request
	// beyond it is refused (429) before anything is resolved.
	MaxActiveJobs int `yaml:"maxActiveJobs"`
	// DefaultGroups are targeted when a request names none (empty = all).
	DefaultGroups []string `yaml:"defaultGroups"`
}

// PushConfig is what a push notification preheats (top-level keys).
type PushConfig struct {
	// MaxWebhookEvents bounds the events (or Harbor resources) of one
	// webhook request, MaxWebhookJobs the jobs one request may start; a
	// request over either is refused whole, before any job starts.
	MaxWebhookEvents int      `yaml:"maxWebhookEvents"`
	MaxWebhookJobs   int      `yaml:"maxWebhookJobs"`
	Policies         []Policy `yaml:"policies"`
}

// renamed lists the keys preheat no longer reads, with what replaced them.
var renamed = config.Renamed{
	"listen":       "use addr",
	"redis.prefix": "use redis.keyPrefix",
	"agentToken": "preheat calls agents over mutual TLS as a cluster member; remove agentToken " +
		"(and the agents' control.token) and set cluster.secret to the agents' join secret",
}

// ClusterConfig is the `cluster:` block.
type ClusterConfig struct {
	Secret          config.Secret `yaml:"secret"`
	PreviousSecrets config.Tokens `yaml:"previousSecrets"`
}

// TrackerConfig reaches the tracker's read API.
type TrackerConfig struct {
	URL   string        `yaml:"url"`
	Token config.Secret `yaml:"token"`
}

// Policy decides what a push preheats (webhook.Policy).
type Policy = webhook.Policy

// HarborConfig covers Shoal acting as a Harbor P2P preheat provider
// (harbor.Config).
type HarborConfig = harbor.Config

// DefaultConfig is the embedded-mode configuration `shoal run` uses.
func DefaultConfig() Config {
	return Config{
		APIConfig:        APIConfig{Addr: config.PreheatAddr, MaxBodyBytes: 1 << 20},
		Log:              config.DefaultLog(),
		Redis:            config.DefaultRedis("{shoal-preheat}:"),
		Cluster:          ClusterConfig{Secret: config.NewSecret("env:SHOAL_CLUSTER_SECRET")},
		RegistriesConfig: RegistriesConfig{Registry: "http://" + config.RegistryAddr},
		NodesConfig: NodesConfig{
			HeartbeatTTL:     30 * time.Second,
			HeartbeatMaxSkew: time.Minute,
			NodeKeyRetention: 30 * 24 * time.Hour,
		},
		JobsConfig: JobsConfig{
			Retention:        24 * time.Hour,
			JobTimeout:       30 * time.Minute,
			FetchTimeout:     10 * time.Minute,
			AgentConcurrency: 4,
			LeaseTTL:         15 * time.Second,
			MaxActiveJobs:    1000,
		},
		PushConfig: PushConfig{MaxWebhookEvents: 100, MaxWebhookJobs: 20},
	}
}

// LoadConfig reads a YAML file over DefaultConfig and validates it.
func LoadConfig(file string) (Config, error) {
	cfg := DefaultConfig()
	if err := config.Load("preheat config", file, &cfg, renamed); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate reports the first unusable setting; it changes nothing.
func (c Config) Validate() error {
	if err := c.validate(); err != nil {
		return fmt.Errorf("preheat config: %w", err)
	}
	return nil
}

func (c Config) validate() error {
	if c.Addr == "" {
		return errors.New("addr is required")
	}
	if c.Registry == "" {
		return errors.New("registry is required")
	}
	for _, err := range []error{c.Log.Validate(), c.Debug.Validate(), c.Redis.Validate()} {
		if err != nil {
			return err
		}
	}
	if _, err := c.clusterSecrets(); err != nil {
		return err
	}
	if err := c.APITokens.Check("apiTokens"); err != nil {
		return err
	}
	if err := c.Harbor.Tokens.Check("harbor.tokens"); err != nil {
		return err
	}
	if err := c.checkExposure(); err != nil {
		return err
	}
	if _, err := c.registrySet(); err != nil {
		return err
	}
	if _, _, err := c.trackerAPI(); err != nil {
		return err
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"heartbeatTTL", c.HeartbeatTTL}, {"heartbeatMaxSkew", c.HeartbeatMaxSkew}, {"retention", c.Retention},
		{"jobTimeout", c.JobTimeout}, {"fetchTimeout", c.FetchTimeout}, {"leaseTTL", c.LeaseTTL}} {
		if d.v <= 0 {
			return fmt.Errorf("%s must be positive", d.name)
		}
	}
	if c.NodeKeyRetention < 10*c.HeartbeatTTL {
		return fmt.Errorf("nodeKeyRetention (%s) must be at least 10 x heartbeatTTL (%s): a node's pin must outlive its record", c.NodeKeyRetention, c.HeartbeatTTL)
	}
	for _, n := range []struct {
		name string
		v    int64
	}{{"agentConcurrency", int64(c.AgentConcurrency)}, {"maxBodyBytes", c.MaxBodyBytes},
		{"maxWebhookEvents", int64(c.MaxWebhookEvents)}, {"maxWebhookJobs", int64(c.MaxWebhookJobs)},
		{"maxActiveJobs", int64(c.MaxActiveJobs)}} {
		if n.v <= 0 {
			return fmt.Errorf("%s must be at least 1", n.name)
		}
	}
	_, err := webhook.Compile(c.Policies)
	return err
}

// clusterSecrets resolves the join secret and the previous ones, current
// first.
func (c Config) clusterSecrets() ([]string, error) {
	if err := c.Cluster.Secret.Check("cluster.secret"); err != nil {
		return nil, err
	}
	if err := c.Cluster.PreviousSecrets.Check("cluster.previousSecrets"); err != nil {
		return nil, err
	}
	return append([]string{c.Cluster.Secret.Value()}, c.Cluster.PreviousSecrets.Values()...), nil
}

// checkExposure is the one rule for preheat's listener: beyond loopback,
// every write needs a token, so a configuration that would serve writes
// to the network without one is refused, saying what to set.
func (c Config) checkExposure() error {
	loop := isLoopbackAddr(c.Addr)
	if !loop && len(c.APITokens) == 0 {
		return fmt.Errorf("addr %s listens beyond loopback with no apiTokens: anyone who reaches it could create and cancel jobs; "+
			"set apiTokens (`openssl rand -hex 32`, as the value, env:VAR or file:/path) or listen on 127.0.0.1", c.Addr)
	}
	switch c.Harbor.Auth {
	case "":
		if len(c.Harbor.Tokens) == 0 && (len(c.Harbor.Clusters) > 0 || len(c.Harbor.DefaultGroups) > 0 || len(c.Harbor.SeedGroups) > 0) {
			return errors.New("harbor: clusters, defaultGroups or seedGroups are set but the provider is off: " +
				"set harbor.tokens (Harbor's OAUTH auth mode), or harbor.auth: none on a loopback addr")
		}
	case "none":
		if len(c.Harbor.Tokens) > 0 {
			return errors.New("harbor.auth: none with harbor.tokens set: remove one of them")
		}
		if !loop {
			return fmt.Errorf("harbor.auth: none needs a loopback addr (not %s): unauthenticated provider calls are accepted only from this host; "+
				"set harbor.tokens and Harbor's OAUTH auth mode instead", c.Addr)
		}
	default:
		return fmt.Errorf("harbor.auth: %q is not none (or empty for tokens)", c.Harbor.Auth)
	}
	return nil
}

// harborEnabled reports whether the Harbor provider routes exist.
func (c Config) harborEnabled() bool { return len(c.Harbor.Tokens) > 0 || c.Harbor.Auth == "none" }

// isLoopbackAddr reports whether a host:port listens on loopback only.
func isLoopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && isLoopbackName(host)
}

// registrySet maps each configured registry's host[:port] to the base URL
// preheat and the agents reach it at: the default registry and the
// registries list. A bare host is https unless listed in
// plainHTTPRegistries or on loopback.
func (c Config) registrySet() (map[string]string, error) {
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
func (c Config) trackerAPI() (base, token string, err error) {
	if c.Tracker.URL == "" {
		if c.Tracker.Token.IsSet() {
			return "", "", fmt.Errorf("tracker.token is set but tracker.url is not")
		}
		return "", "", nil
	}
	u, err := url.Parse(strings.TrimSuffix(c.Tracker.URL, "/"))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		// The value is not echoed: it may carry credentials.
		return "", "", fmt.Errorf("tracker.url: want http(s)://host[:port][/path] (the tracker's base URL, no credentials, query or fragment)")
	}
	if err := c.Tracker.Token.Check("tracker.token"); err != nil {
		return "", "", fmt.Errorf("%w (one of the tracker's API tokens)", err)
	}
	return u.String(), c.Tracker.Token.Value(), nil
}
