package tracker

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/secret"
)

// Config is the tracker configuration; configs/tracker.yml documents every
// key.
type Config struct {
	// Addr is the listen address of /announce, /scrape, the read API,
	// /healthz and /metrics.
	Addr string `yaml:"addr"`
	// Secrets verify announce tokens; the first is current, the rest are
	// accepted during a rotation. Each is the secret itself, env:VAR or
	// file:/path, resolved and strength-checked when the config is loaded
	// (config.Secret); placeholders and short ones are refused.
	Secrets config.Tokens `yaml:"secrets"`
	// APITokens guard the read API (GET /api/v1/swarms) as bearer tokens;
	// each is the token itself, env:VAR or file:/path. Empty: the read API
	// is off. Never the same values as Secrets: a reader must not be able to
	// mint announce tokens.
	APITokens config.Tokens `yaml:"apiTokens"`
	// MaxSwarms caps the swarms one listing returns.
	MaxSwarms int `yaml:"maxSwarms"`
	// Interval is what clients are told to wait between announces.
	Interval time.Duration `yaml:"interval"`
	// PeerTTL is how long a peer stays in a swarm without re-announcing. It
	// must cover the real re-announce period of clients, which for anacrolix
	// is never below one minute whatever Interval says.
	PeerTTL time.Duration `yaml:"peerTTL"`
	// DefaultNumwant applies when a client sends no numwant.
	DefaultNumwant int `yaml:"defaultNumwant"`
	// MaxNumwant caps the peers returned per announce.
	MaxNumwant int `yaml:"maxNumwant"`
	// RequestTimeout bounds the store work of one request, so a sick store
	// yields a quick failure reason instead of hanging clients.
	RequestTimeout time.Duration `yaml:"requestTimeout"`
	// RealIPHeader, when set, names a header (e.g. X-Forwarded-For) whose
	// first address is taken as the peer's IP. Set it only behind a proxy
	// that overwrites the header, or peers can spoof addresses — and, as
	// entries are keyed by (peer_id, IP), take over other peers' entries.
	RealIPHeader string `yaml:"realIPHeader"`
	// MaxScrape bounds the infohashes per scrape request.
	MaxScrape int `yaml:"maxScrape"`
	// Cluster is membership: the join secret the agents hold. With it, only
	// announces signed by a member (internal/announce) enter the swarm; an
	// announce token alone, which every .torrent carries, is not enough.
	// Values may be the secret, env:VAR or file:/path; PreviousSecrets are
	// still accepted while the secret rotates.
	Cluster struct {
		Secret          string   `yaml:"secret"`
		PreviousSecrets []string `yaml:"previousSecrets"`
	} `yaml:"cluster"`
	// AllowUnsigned admits announces without a member signature. With
	// cluster.secret set they are kept as unverified peers, handed out only
	// after every member and the origin; without it (a tracker for clients
	// that are not Shoal agents) every peer is unverified in fact, and one
	// token holder can crowd a swarm.
	AllowUnsigned bool `yaml:"allowUnsigned"`
	// SignatureMaxSkew is how far a signed announce's timestamp may be from
	// the tracker's clock; it bounds how long a captured announce replays.
	SignatureMaxSkew time.Duration `yaml:"signatureMaxSkew"`
	// YoungSwarmSeeders: while a swarm has fewer complete peers than this
	// (the origin not counted), every hand-out includes the origin, so no
	// set of peers can keep a young swarm from its source.
	YoungSwarmSeeders int `yaml:"youngSwarmSeeders"`
	// MaxPeersPerIP caps the peers of one IP address in a hand-out
	// (loopback addresses exempt: those are single-host setups).
	MaxPeersPerIP int `yaml:"maxPeersPerIP"`
	// Redis holds the peers when redis.addrs is set, so any number of
	// replicas share them; without addrs they are in memory (one replica).
	Redis config.Redis `yaml:"redis"`
	Debug config.Debug `yaml:"debug"`
	Log   config.Log   `yaml:"log"`
}

// renamed lists the keys of the snake_case dialect (before issue 14) and
// the removed store key, so an old file fails naming its replacement
// instead of half-working.
var renamed = config.Renamed{
	"api_tokens":              "use apiTokens",
	"max_swarms":              "use maxSwarms",
	"peer_ttl":                "use peerTTL",
	"default_numwant":         "use defaultNumwant",
	"max_numwant":             "use maxNumwant",
	"request_timeout":         "use requestTimeout",
	"real_ip_header":          "use realIPHeader",
	"max_scrape":              "use maxScrape",
	"log_level":               "use log.level",
	"store":                   "removed: the tracker keeps peers in Redis when redis.addrs is set and in memory otherwise",
	"redis.mastername":        "use redis.masterName",
	"redis.sentinel_username": "use redis.sentinelUsername",
	"redis.sentinel_password": "use redis.sentinelPassword",
	"redis.dial_timeout":      "use redis.dialTimeout",
	"redis.read_timeout":      "use redis.readTimeout",
	"redis.write_timeout":     "use redis.writeTimeout",
	"redis.pool_size":         "use redis.poolSize",
	"redis.key_prefix":        "use redis.keyPrefix",
}

// DefaultConfig is the embedded default: peers in memory, on loopback.
func DefaultConfig() Config {
	// The tracker's Redis timeouts are tighter than the house defaults: an
	// announce is a few small commands, and a client is better served by a
	// quick failure reason and its own retry than by a request queued
	// behind a sick Redis. The "shoal:" prefix is the one trackers have
	// always written, so existing Redis data stays valid.
	rd := config.DefaultRedis("shoal:")
	rd.DialTimeout = 200 * time.Millisecond
	rd.ReadTimeout = 300 * time.Millisecond
	rd.WriteTimeout = 300 * time.Millisecond
	rd.PoolSize = 64
	return Config{
		Addr:              config.TrackerAddr,
		Interval:          10 * time.Second,
		PeerTTL:           3 * time.Minute,
		DefaultNumwant:    50,
		MaxNumwant:        200,
		RequestTimeout:    500 * time.Millisecond,
		MaxScrape:         64,
		MaxSwarms:         200,
		SignatureMaxSkew:  2 * time.Minute,
		YoungSwarmSeeders: 8,
		MaxPeersPerIP:     4,
		Redis:             rd,
		Log:               config.DefaultLog(),
	}
}

// LoadConfig reads a YAML file over DefaultConfig and validates it.
func LoadConfig(path string) (Config, error) {
	cfg := DefaultConfig()
	if err := config.Load("tracker config", path, &cfg, renamed); err != nil {
		return cfg, err
	}
	return cfg, cfg.Validate()
}

// Validate reports the first unusable setting; it changes nothing.
func (c Config) Validate() error {
	switch {
	case c.Addr == "":
		return errors.New("tracker config: addr must be set")
	case len(c.Secrets) == 0:
		return errors.New("tracker config: secrets: at least one secret is required (shared with the registry); generate one with `openssl rand -hex 32` and set it directly, as env:VAR or as file:/path")
	case c.Interval < time.Second:
		return fmt.Errorf("tracker config: interval %v is below 1s", c.Interval)
	case c.PeerTTL < c.Interval:
		return fmt.Errorf("tracker config: peerTTL %v is shorter than interval %v", c.PeerTTL, c.Interval)
	case c.MaxNumwant < 1:
		return errors.New("tracker config: maxNumwant must be at least 1")
	case c.DefaultNumwant < 0 || c.DefaultNumwant > c.MaxNumwant:
		return fmt.Errorf("tracker config: defaultNumwant %d outside 0..maxNumwant", c.DefaultNumwant)
	case c.RequestTimeout <= 0:
		return errors.New("tracker config: requestTimeout must be positive")
	case c.MaxScrape < 1:
		return errors.New("tracker config: maxScrape must be at least 1")
	case c.MaxSwarms < 1:
		return errors.New("tracker config: maxSwarms must be at least 1")
	case c.SignatureMaxSkew < time.Second:
		return fmt.Errorf("tracker config: signatureMaxSkew %v is below 1s", c.SignatureMaxSkew)
	case c.YoungSwarmSeeders < 0:
		return errors.New("tracker config: youngSwarmSeeders must not be negative")
	case c.MaxPeersPerIP < 1:
		return errors.New("tracker config: maxPeersPerIP must be at least 1")
	}
	for _, b := range []interface{ Validate() error }{c.Log, c.Debug, c.Redis} {
		if err := b.Validate(); err != nil {
			return fmt.Errorf("tracker config: %w", err)
		}
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
			return errors.New("tracker config: apiTokens: a token equals one of the secrets; a reader must not hold the key that signs announce tokens")
		}
	}
	joins, err := c.clusterSecrets()
	if err != nil {
		return err
	}
	if len(joins) == 0 && !c.AllowUnsigned {
		return errors.New("tracker config: cluster.secret is required (the agents' join secret), so that only cluster members are handed out to each other; a tracker for clients that are not Shoal agents sets allowUnsigned: true instead")
	}
	return nil
}

// resolveSecrets reads the secrets (env:, file: or literal) and refuses any
// a stranger could guess: with one, anyone mints announce tokens for any
// torrent.
func (c Config) resolveSecrets() ([]string, error) {
	if err := c.Secrets.Check("secrets"); err != nil {
		return nil, fmt.Errorf("tracker config: %w (the registry's p2p tracker.secrets must list the same)", err)
	}
	return c.Secrets.Values(), nil
}

// clusterSecrets resolves the join secret and the previous ones, current
// first; none when cluster.secret is unset.
func (c Config) clusterSecrets() ([]string, error) {
	if c.Cluster.Secret == "" && len(c.Cluster.PreviousSecrets) == 0 {
		return nil, nil
	}
	out, err := secret.ResolveRotating("cluster.secret", c.Cluster.Secret, "cluster.previousSecrets", c.Cluster.PreviousSecrets)
	if err != nil {
		return nil, fmt.Errorf("tracker config: %w", err)
	}
	return out, nil
}

// resolveAPITokens reads the read API's bearer tokens, refusing guessable
// ones as for secrets.
func (c Config) resolveAPITokens() ([]string, error) {
	if err := c.APITokens.Check("apiTokens"); err != nil {
		return nil, fmt.Errorf("tracker config: %w", err)
	}
	return c.APITokens.Values(), nil
}
