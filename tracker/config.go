package tracker

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/shoalproject/shoal/internal/debugserver"
	"github.com/shoalproject/shoal/internal/secret"
)

// Config is the tracker configuration; configs/tracker.yml documents every
// field.
type Config struct {
	Addr string `yaml:"addr"`
	// Secrets verify announce tokens; the first is current, the rest are
	// accepted during a rotation. Each is the secret itself, env:VAR or
	// file:/path (internal/secret); placeholders and short ones are refused.
	Secrets []string `yaml:"secrets"`
	// APITokens guard the read API (GET /api/v1/swarms) as bearer tokens;
	// each is the token itself, env:VAR or file:/path. Empty: the read API
	// is off. Never the same values as Secrets: a reader must not be able to
	// mint announce tokens.
	APITokens []string `yaml:"api_tokens"`
	// MaxSwarms caps the swarms one listing returns.
	MaxSwarms int `yaml:"max_swarms"`
	// Interval is what clients are told to wait between announces.
	Interval time.Duration `yaml:"interval"`
	// PeerTTL is how long a peer stays in a swarm without re-announcing. It
	// must cover the real re-announce period of clients, which for anacrolix
	// is never below one minute whatever Interval says.
	PeerTTL time.Duration `yaml:"peer_ttl"`
	// DefaultNumwant applies when a client sends no numwant.
	DefaultNumwant int `yaml:"default_numwant"`
	// MaxNumwant caps the peers returned per announce.
	MaxNumwant int `yaml:"max_numwant"`
	// RequestTimeout bounds the store work of one request, so a sick store
	// yields a quick failure reason instead of hanging clients.
	RequestTimeout time.Duration `yaml:"request_timeout"`
	// RealIPHeader, when set, names a header (e.g. X-Forwarded-For) whose
	// first address is taken as the peer's IP. Set it only behind a proxy
	// that overwrites the header, or peers can spoof addresses — and, as
	// entries are keyed by (peer_id, IP), take over other peers' entries.
	RealIPHeader string `yaml:"real_ip_header"`
	// MaxScrape bounds the infohashes per scrape request.
	MaxScrape int         `yaml:"max_scrape"`
	Store     string      `yaml:"store"`
	Redis     RedisConfig `yaml:"redis"`
	// Debug.Addr, when set, serves net/http/pprof there; loopback only.
	Debug struct {
		Addr string `yaml:"addr"`
	} `yaml:"debug"`
	LogLevel string `yaml:"log_level"`
}

// RedisConfig selects standalone (one addr), Cluster (several addrs) or
// Sentinel (mastername set, addrs are sentinels), as go-redis
// UniversalClient does.
type RedisConfig struct {
	Addrs            []string      `yaml:"addrs"`
	MasterName       string        `yaml:"mastername"`
	Username         string        `yaml:"username"`
	Password         string        `yaml:"password"`
	SentinelUsername string        `yaml:"sentinel_username"`
	SentinelPassword string        `yaml:"sentinel_password"`
	DB               int           `yaml:"db"`
	DialTimeout      time.Duration `yaml:"dial_timeout"`
	ReadTimeout      time.Duration `yaml:"read_timeout"`
	WriteTimeout     time.Duration `yaml:"write_timeout"`
	PoolSize         int           `yaml:"pool_size"`
	KeyPrefix        string        `yaml:"key_prefix"`
}

// DefaultConfig is the embedded default: in-memory store on loopback.
func DefaultConfig() Config {
	return Config{
		Addr:           "127.0.0.1:6969",
		Interval:       10 * time.Second,
		PeerTTL:        3 * time.Minute,
		DefaultNumwant: 50,
		MaxNumwant:     200,
		RequestTimeout: 500 * time.Millisecond,
		MaxScrape:      64,
		MaxSwarms:      200,
		Store:          "memory",
		LogLevel:       "info",
		Redis: RedisConfig{
			DialTimeout:  200 * time.Millisecond,
			ReadTimeout:  300 * time.Millisecond,
			WriteTimeout: 300 * time.Millisecond,
			PoolSize:     64,
			KeyPrefix:    "shoal:",
		},
	}
}

// LoadConfig reads a YAML file over DefaultConfig. Unknown keys are errors so
// a typo never silently falls back to a default.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	b, err := os.ReadFile(path)
	if err != nil {
		return cfg, fmt.Errorf("read tracker config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&cfg); err != nil && !errors.Is(err, io.EOF) {
		return cfg, fmt.Errorf("parse tracker config %s: %w", path, err)
	}
	return cfg, cfg.Validate()
}

// Validate reports the first unusable setting.
func (c Config) Validate() error {
	switch {
	case len(c.Secrets) == 0:
		return errors.New("tracker config: secrets: at least one secret is required (shared with the registry); generate one with `openssl rand -hex 32` and set it directly, as env:VAR or as file:/path")
	case c.Interval < time.Second:
		return fmt.Errorf("tracker config: interval %v is below 1s", c.Interval)
	case c.PeerTTL < c.Interval:
		return fmt.Errorf("tracker config: peer_ttl %v is shorter than interval %v", c.PeerTTL, c.Interval)
	case c.MaxNumwant < 1:
		return errors.New("tracker config: max_numwant must be at least 1")
	case c.DefaultNumwant < 0 || c.DefaultNumwant > c.MaxNumwant:
		return fmt.Errorf("tracker config: default_numwant %d outside 0..max_numwant", c.DefaultNumwant)
	case c.RequestTimeout <= 0:
		return errors.New("tracker config: request_timeout must be positive")
	case c.MaxScrape < 1:
		return errors.New("tracker config: max_scrape must be at least 1")
	case c.MaxSwarms < 1:
		return errors.New("tracker config: max_swarms must be at least 1")
	}
	if err := debugserver.ValidateAddr(c.Debug.Addr); err != nil {
		return fmt.Errorf("tracker config: debug.addr: %w", err)
	}
	secrets, err := c.resolveSecrets()
	if err != nil {
		return err
	}
	apiTokens, err := c.resolveAPITokens()
	if err != nil {
		return err
	}
	for _, t := range apiTokens {
		if slices.Contains(secrets, t) {
			return errors.New("tracker config: api_tokens: a token equals one of the secrets; a reader must not hold the key that signs announce tokens")
		}
	}
	switch c.Store {
	case "memory":
	case "redis":
		if len(c.Redis.Addrs) == 0 {
			return errors.New("tracker config: store redis needs redis.addrs")
		}
	default:
		return fmt.Errorf("tracker config: store %q: want memory or redis", c.Store)
	}
	return nil
}

// resolveSecrets reads the secrets (env:, file: or literal) and refuses any
// a stranger could guess: with one, anyone mints announce tokens for any
// torrent.
func (c Config) resolveSecrets() ([]string, error) {
	out, err := secret.ResolveAll("secrets", c.Secrets)
	if err != nil {
		return nil, fmt.Errorf("tracker config: %w (the registry's p2p tracker.secrets must list the same)", err)
	}
	return out, nil
}

// resolveAPITokens reads the read API's bearer tokens, refusing guessable
// ones as for secrets.
func (c Config) resolveAPITokens() ([]string, error) {
	out, err := secret.ResolveAll("api_tokens", c.APITokens)
	if err != nil {
		return nil, fmt.Errorf("tracker config: %w", err)
	}
	return out, nil
}
