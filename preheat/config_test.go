package preheat

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func loadString(t *testing.T, yml string) (Config, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "preheat.yml")
	if err := os.WriteFile(p, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	return LoadConfig(p)
}

func TestLoadConfig(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", testClusterSecret)
	for _, tc := range []struct {
		name, yml string
		// wantErr: every part must be in the error.
		wantErr []string
		check   func(Config) bool
	}{
		{name: "empty file means the defaults", yml: "",
			check: func(c Config) bool { return reflect.DeepEqual(c, DefaultConfig()) }},
		{name: "addr", yml: "addr: 127.0.0.1:9000\n",
			check: func(c Config) bool { return c.Addr == "127.0.0.1:9000" && c.Log.Level == "info" }},
		{name: "redis block", yml: "redis: {addrs: [\"127.0.0.1:6379\"], keyPrefix: \"{p}:\", dialTimeout: 2s}\n",
			check: func(c Config) bool {
				return c.Redis.KeyPrefix == "{p}:" && c.Redis.DialTimeout == 2*time.Second && c.Redis.ReadTimeout == time.Second
			}},
		{name: "log and debug blocks", yml: "log: {level: debug, format: json}\ndebug: {addr: 127.0.0.1:6060}\n",
			check: func(c Config) bool { return c.Log.Format == "json" && c.Debug.Addr == "127.0.0.1:6060" }},
		{name: "listen renamed", yml: "listen: 127.0.0.1:8002\n", wantErr: []string{`line 1`, `"listen"`, "use addr"}},
		{name: "redis.prefix renamed", yml: "redis:\n  prefix: x\n", wantErr: []string{`line 2`, `"redis.prefix"`, "redis.keyPrefix"}},
		{name: "agentToken removed", yml: "agentToken: t\n", wantErr: []string{`"agentToken"`, "cluster.secret"}},
		{name: "unknown key", yml: "adr: x\n", wantErr: []string{`unknown key "adr"`}},
		{name: "bad log level", yml: "log: {level: loud}\n", wantErr: []string{"log.level"}},
		{name: "debug beyond loopback", yml: "debug: {addr: 10.0.0.1:6060}\n", wantErr: []string{"debug.addr", "loopback"}},
		{name: "redis without prefix", yml: "redis: {addrs: [a:1], keyPrefix: \"\"}\n", wantErr: []string{"redis.keyPrefix"}},
		{name: "zero agentConcurrency", yml: "agentConcurrency: 0\n", wantErr: []string{"agentConcurrency"}},
		{name: "zero heartbeatMaxSkew", yml: "heartbeatMaxSkew: 0s\n", wantErr: []string{"heartbeatMaxSkew"}},
		{name: "bad tagRegex", yml: "policies: [{repository: \"a/*\", tagRegex: \"(\"}]\n", wantErr: []string{"tagRegex"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := loadString(t, tc.yml)
			if tc.wantErr != nil {
				if err == nil {
					t.Fatalf("loaded: %+v", c)
				}
				for _, w := range tc.wantErr {
					if !strings.Contains(err.Error(), w) {
						t.Fatalf("err = %v, want it to contain %q", err, w)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("config %+v", c)
			}
		})
	}
}

// Validate changes nothing, also for a config it refuses.
func TestValidatePure(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", testClusterSecret)
	for _, c := range []Config{DefaultConfig(), func() Config {
		c := DefaultConfig()
		c.Policies = []Policy{{Name: "p", Repository: "a/*", TagRegex: `^v\d+$`}}
		c.AgentConcurrency, c.MaxBodyBytes = 0, 0
		return c
	}()} {
		before := c
		before.Policies = append([]Policy(nil), c.Policies...)
		_ = c.Validate()
		if !reflect.DeepEqual(before, c) {
			t.Fatalf("Validate changed the config: %+v -> %+v", before, c)
		}
	}
}

// The shipped config loads and documents every key with its default:
// what it sets is exactly DefaultConfig (compared as YAML, where an empty
// list and no list are the same).
func TestShippedConfigIsTheDefaults(t *testing.T) {
	t.Setenv("SHOAL_CLUSTER_SECRET", testClusterSecret)
	cfg, err := LoadConfig("../configs/preheat.yml")
	if err != nil {
		t.Fatal(err)
	}
	got, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := yaml.Marshal(DefaultConfig())
	if string(got) != string(want) {
		t.Fatalf("configs/preheat.yml is not the defaults:\n%s\nwant:\n%s", got, want)
	}
}
