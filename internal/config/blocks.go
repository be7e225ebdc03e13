package config

import (
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/sirupsen/logrus"

	"github.com/shoalproject/shoal/internal/debugserver"
)

// Log is every component's `log:` block.
type Log struct {
	// Level is a logrus level: trace, debug, info, warn, error.
	Level string `yaml:"level"`
	// Format is text (the default) or json.
	Format string `yaml:"format"`
}

// DefaultLog is info-level text.
func DefaultLog() Log { return Log{Level: "info", Format: "text"} }

// Validate reports an unknown level or format.
func (l Log) Validate() error {
	if _, err := logrus.ParseLevel(l.Level); err != nil {
		return fmt.Errorf("log.level: %q is not one of trace, debug, info, warn, error", l.Level)
	}
	if l.Format != "text" && l.Format != "json" {
		return fmt.Errorf("log.format: %q is not text or json", l.Format)
	}
	return nil
}

// NewLogger returns a logger of its own for a component (never the
// process-global one, so two components in one process keep their own
// levels), tagged with component=<name>. l must have passed Validate.
func (l Log) NewLogger(component string) *logrus.Entry {
	lg := logrus.New()
	lg.SetOutput(os.Stderr)
	if lvl, err := logrus.ParseLevel(l.Level); err == nil {
		lg.SetLevel(lvl)
	}
	if l.Format == "json" {
		lg.SetFormatter(&logrus.JSONFormatter{})
	}
	return lg.WithField("component", component)
}

// Debug is every component's `debug:` block: the opt-in pprof listener.
type Debug struct {
	// Addr, when set, serves net/http/pprof there; loopback only.
	Addr string `yaml:"addr"`
}

// Validate refuses a debug listener beyond loopback.
func (d Debug) Validate() error {
	if err := debugserver.ValidateAddr(d.Addr); err != nil {
		return fmt.Errorf("debug.addr: %w", err)
	}
	return nil
}

// Redis is every component's `redis:` block. One addr selects a standalone
// server, several a Cluster, and MasterName makes the addrs Sentinels, as
// go-redis's UniversalClient does. No addrs: the component keeps its state
// in memory (one replica).
type Redis struct {
	Addrs      []string `yaml:"addrs"`
	MasterName string   `yaml:"masterName"`
	// Username and Password (and the Sentinel pair) may be the value,
	// env:VAR or file:/path, resolved when the config is decoded.
	Username         Credential `yaml:"username"`
	Password         Credential `yaml:"password"`
	SentinelUsername Credential `yaml:"sentinelUsername"`
	SentinelPassword Credential `yaml:"sentinelPassword"`
	DB               int        `yaml:"db"`
	// KeyPrefix starts every key; keep a {hash tag} in it on a Cluster so
	// that a component's keys share one slot where it needs transactions.
	KeyPrefix string `yaml:"keyPrefix"`
	// Timeouts are bounded so that a sick Redis fails a request quickly
	// instead of queueing work behind it.
	DialTimeout  time.Duration `yaml:"dialTimeout"`
	ReadTimeout  time.Duration `yaml:"readTimeout"`
	WriteTimeout time.Duration `yaml:"writeTimeout"`
	PoolSize     int           `yaml:"poolSize"`
	MaxRetries   int           `yaml:"maxRetries"`
}

// DefaultRedis is the block's defaults with the component's key prefix.
func DefaultRedis(keyPrefix string) Redis {
	return Redis{
		KeyPrefix:    keyPrefix,
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  time.Second,
		WriteTimeout: time.Second,
		PoolSize:     64,
		MaxRetries:   1,
	}
}

type namedCredential struct {
	name string
	v    Credential
}

func (r Redis) credentials() []namedCredential {
	return []namedCredential{{"redis.username", r.Username}, {"redis.password", r.Password},
		{"redis.sentinelUsername", r.SentinelUsername}, {"redis.sentinelPassword", r.SentinelPassword}}
}

// Enabled reports whether Redis is configured (else: memory).
func (r Redis) Enabled() bool { return len(r.Addrs) > 0 }

// Validate reports unusable settings without contacting Redis.
func (r Redis) Validate() error {
	switch {
	case !r.Enabled():
		return nil
	case r.DialTimeout <= 0 || r.ReadTimeout <= 0 || r.WriteTimeout <= 0:
		return errors.New("redis: dialTimeout, readTimeout and writeTimeout must be positive")
	case r.PoolSize < 1:
		return errors.New("redis.poolSize must be at least 1")
	case r.MaxRetries < 0:
		return errors.New("redis.maxRetries must not be negative")
	case r.DB < 0:
		return errors.New("redis.db must not be negative")
	case r.KeyPrefix == "":
		return errors.New("redis.keyPrefix must not be empty: it keeps Shoal's keys apart from others in the same database")
	}
	for _, a := range r.Addrs {
		if a == "" {
			return errors.New("redis.addrs: empty address")
		}
	}
	for _, c := range r.credentials() {
		if err := c.v.Check(c.name); err != nil {
			return err
		}
	}
	return nil
}

// NewClient builds the client the block describes: bounded timeouts and
// few retries everywhere, credentials read through internal/secret.
func (r Redis) NewClient() (redis.UniversalClient, error) {
	for _, c := range r.credentials() {
		if err := c.v.Check(c.name); err != nil {
			return nil, err
		}
	}
	user, pass := r.Username.Value(), r.Password.Value()
	suser, spass := r.SentinelUsername.Value(), r.SentinelPassword.Value()
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:                 r.Addrs,
		MasterName:            r.MasterName,
		Username:              user,
		Password:              pass,
		SentinelUsername:      suser,
		SentinelPassword:      spass,
		DB:                    r.DB,
		DialTimeout:           r.DialTimeout,
		ReadTimeout:           r.ReadTimeout,
		WriteTimeout:          r.WriteTimeout,
		PoolSize:              r.PoolSize,
		PoolTimeout:           r.ReadTimeout + r.WriteTimeout,
		MaxRetries:            r.MaxRetries,
		DialerRetries:         1,
		DialerRetryTimeout:    10 * time.Millisecond,
		ContextTimeoutEnabled: true,
	}), nil
}
