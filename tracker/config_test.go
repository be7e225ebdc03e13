package tracker

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/secret"
)

// Every key of the snake_case dialect, and the removed store key, fails
// naming what replaced it.
func TestRenamedKeysRejected(t *testing.T) {
	cases := []struct{ key, yaml, want string }{
		{"api_tokens", "api_tokens: []\n", "use apiTokens"},
		{"max_swarms", "max_swarms: 5\n", "use maxSwarms"},
		{"peer_ttl", "peer_ttl: 3m\n", "use peerTTL"},
		{"default_numwant", "default_numwant: 5\n", "use defaultNumwant"},
		{"max_numwant", "max_numwant: 5\n", "use maxNumwant"},
		{"request_timeout", "request_timeout: 1s\n", "use requestTimeout"},
		{"real_ip_header", "real_ip_header: X-Forwarded-For\n", "use realIPHeader"},
		{"max_scrape", "max_scrape: 5\n", "use maxScrape"},
		{"log_level", "log_level: warn\n", "use log.level"},
		{"store", "store: memory\n", "in Redis when redis.addrs is set and in memory otherwise"},
		{"redis.mastername", "redis:\n  mastername: m\n", "use redis.masterName"},
		{"redis.sentinel_username", "redis:\n  sentinel_username: u\n", "use redis.sentinelUsername"},
		{"redis.sentinel_password", "redis:\n  sentinel_password: p\n", "use redis.sentinelPassword"},
		{"redis.dial_timeout", "redis:\n  dial_timeout: 1s\n", "use redis.dialTimeout"},
		{"redis.read_timeout", "redis:\n  read_timeout: 1s\n", "use redis.readTimeout"},
		{"redis.write_timeout", "redis:\n  write_timeout: 1s\n", "use redis.writeTimeout"},
		{"redis.pool_size", "redis:\n  pool_size: 8\n", "use redis.poolSize"},
		{"redis.key_prefix", "redis:\n  key_prefix: x\n", "use redis.keyPrefix"},
	}
	covered := map[string]bool{}
	dir := t.TempDir()
	for _, tc := range cases {
		covered[tc.key] = true
		t.Run(tc.key, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(tc.key, ".", "_")+".yml")
			if err := os.WriteFile(p, []byte("secrets: ["+testSecret+"]\n"+tc.yaml), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := LoadConfig(p)
			if err == nil || !strings.Contains(err.Error(), `key "`+tc.key+`" is no longer read`) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want it to name %q and %q", err, tc.key, tc.want)
			}
		})
	}
	for k := range renamed {
		if !covered[k] {
			t.Errorf("renamed key %q has no case here", k)
		}
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	cfg, err := LoadConfig(write("camel.yml", "secrets: ["+testSecret+"]\nallowUnsigned: true\npeerTTL: 5m\nrealIPHeader: X-Real-IP\n"+
		"log: {level: warn, format: json}\nredis: {addrs: [\"127.0.0.1:1\"], masterName: m, keyPrefix: \"p:\"}\n"))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PeerTTL != 5*time.Minute || cfg.RealIPHeader != "X-Real-IP" || cfg.Log.Level != "warn" || cfg.Log.Format != "json" ||
		cfg.Redis.MasterName != "m" || cfg.Redis.KeyPrefix != "p:" || !cfg.Redis.Enabled() {
		t.Fatalf("decoded %+v", cfg)
	}
	// Keys left out keep the tracker's own (tighter) Redis defaults.
	if cfg.Redis.ReadTimeout != 300*time.Millisecond || cfg.Redis.DialTimeout != 200*time.Millisecond || cfg.Redis.PoolSize != 64 {
		t.Fatalf("redis defaults lost: %+v", cfg.Redis)
	}
	for name, tc := range map[string]struct{ body, want string }{
		"unknown key":    {"secrets: [" + testSecret + "]\nintervall: 5s\n", `unknown key "intervall"`},
		"bad log level":  {"secrets: [" + testSecret + "]\nlog: {level: loud}\n", "log.level"},
		"redis no prefx": {"secrets: [" + testSecret + "]\nredis: {addrs: [\"a:1\"], keyPrefix: \"\"}\n", "redis.keyPrefix"},
		"ttl < interval": {"secrets: [" + testSecret + "]\npeerTTL: 5s\n", "peerTTL"},
	} {
		if _, err := LoadConfig(write(strings.ReplaceAll(name, " ", "_")+".yml", tc.body)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", name, err, tc.want)
		}
	}
}

// The tracker's Redis defaults stay what trackers always used: existing
// data is under "shoal:", and the timeouts are tighter than the house's.
func TestDefaultRedis(t *testing.T) {
	r := DefaultConfig().Redis
	if r.KeyPrefix != "shoal:" || r.DialTimeout != 200*time.Millisecond || r.ReadTimeout != 300*time.Millisecond ||
		r.WriteTimeout != 300*time.Millisecond || r.PoolSize != 64 || r.MaxRetries != 1 || r.Enabled() {
		t.Fatalf("DefaultConfig().Redis = %+v", r)
	}
}

// Validate is pure: a value receiver, and nothing it reads is rewritten.
func TestValidateChangesNothing(t *testing.T) {
	cfg := testConfig()
	cfg.DefaultNumwant = 0
	before := cfg
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	if cfg.DefaultNumwant != before.DefaultNumwant || cfg.Addr != before.Addr {
		t.Fatalf("Validate changed the config: %+v", cfg)
	}
}

func TestNewPicksStoreFromRedisAddrs(t *testing.T) {
	s, err := New(testConfig(), Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if s.storeKind != "memory" {
		t.Fatalf("no redis.addrs: store %s", s.storeKind)
	}
	cfg := testConfig()
	cfg.Redis.Addrs = []string{"127.0.0.1:1"} // New does not connect
	s2, err := New(cfg, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	if s2.storeKind != "redis" {
		t.Fatalf("redis.addrs set: store %s", s2.storeKind)
	}
	cfg.Redis.Password = config.NewCredential("env:SHOAL_TEST_TRACKER_REDIS_UNSET")
	if _, err := New(cfg, Deps{}); err == nil || !strings.Contains(err.Error(), "redis.password") {
		t.Fatalf("unresolvable redis password: %v", err)
	}
}

// TestClusterSecretRequired: secure by default, a tracker without the join
// secret refuses to start unless unsigned announces are asked for.
func TestClusterSecretRequired(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Secrets = config.NewTokens(testSecret)
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "cluster.secret is required") || !strings.Contains(err.Error(), "allowUnsigned") {
		t.Fatalf("no cluster.secret: %v", err)
	}
	cfg.Cluster.Secret = "change-me-cluster"
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "cluster.secret") {
		t.Fatalf("placeholder cluster.secret: %v", err)
	}
	cfg.Cluster.Secret = secret.Generate()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Cluster.Secret = ""
	cfg.AllowUnsigned = true
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.SignatureMaxSkew = 0
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "signatureMaxSkew") {
		t.Fatalf("signatureMaxSkew 0: %v", err)
	}
}
