package registry

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/distribution/distribution/v3/configuration"
)

// harborRedis is the redis block of Harbor's installer template
// (make/photon/prepare/templates/registry/config.yml.jinja) as prepare
// renders it for redis://redis:6379/1.
const harborRedis = `redis:
  addr: redis:6379
  readtimeout: 10s
  writetimeout: 10s
  dialtimeout: 10s
  password: 
  username: 
  db: 1
  enableTLS: false
  pool:
    maxidle: 100
    maxactive: 500
    idletimeout: 60s
`

func parseUpgraded(t *testing.T, yml string, bundle string) (*configuration.Configuration, []string, error) {
	t.Helper()
	b, notes, err := upgradeRedis([]byte("version: 0.1\nstorage: {inmemory: {}}\n"+yml), func() string { return bundle })
	if err != nil {
		return nil, nil, err
	}
	cfg, err := configuration.Parse(bytes.NewReader(b))
	if err != nil {
		t.Fatalf("distribution cannot parse the upgraded config: %v\n%s", err, b)
	}
	return cfg, notes, nil
}

func TestUpgradeRedisHarbor(t *testing.T) {
	cfg, notes, err := parseUpgraded(t, harborRedis, "/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Redis.Options
	if !reflect.DeepEqual(o.Addrs, []string{"redis:6379"}) || o.DB != 1 || o.MaxIdleConns != 100 || o.PoolSize != 500 ||
		o.ConnMaxIdleTime != time.Minute || o.ReadTimeout != 10*time.Second || o.WriteTimeout != 10*time.Second ||
		o.DialTimeout != 10*time.Second || o.Password != "" || o.MasterName != "" {
		t.Errorf("redis options: %+v", o)
	}
	if cfg.Redis.TLS.RootCAs != nil {
		t.Errorf("enableTLS: false turned TLS on: %+v", cfg.Redis.TLS)
	}
	// One note per mapped key, naming the key and its v3 form.
	for _, want := range []string{"redis.addr: redis:6379 (distribution v2) read as redis.addrs: [redis:6379]",
		"redis.pool.maxidle: 100 (distribution v2) read as redis.maxidleconns: 100",
		"redis.pool.maxactive: 500 (distribution v2) read as redis.poolsize: 500",
		"redis.pool.idletimeout: 60s (distribution v2) read as redis.connmaxidletime: 60s",
		"redis.enableTLS: false"} {
		if !containsPrefix(notes, want) {
			t.Errorf("no note %q in %q", want, notes)
		}
	}
	if len(notes) != 5 {
		t.Errorf("notes: %q, want 5", notes)
	}
}

func containsPrefix(notes []string, prefix string) bool {
	for _, n := range notes {
		if strings.HasPrefix(n, prefix) {
			return true
		}
	}
	return false
}

// Harbor's Sentinel form: sentinels comma-separated in addr, the master in
// sentinelMasterSet (the Helm chart's spelling too).
func TestUpgradeRedisSentinel(t *testing.T) {
	cfg, notes, err := parseUpgraded(t, `redis:
  addr: s1:26379, s2:26379,s3:26379
  sentinelMasterSet: mymaster
  password: "p@ss"
  db: 2
`, "")
	if err != nil {
		t.Fatal(err)
	}
	o := cfg.Redis.Options
	if !reflect.DeepEqual(o.Addrs, []string{"s1:26379", "s2:26379", "s3:26379"}) || o.MasterName != "mymaster" || o.Password != "p@ss" || o.DB != 2 {
		t.Errorf("redis options: %+v", o)
	}
	if !containsPrefix(notes, "redis.sentinelMasterSet: mymaster (Harbor's v2 registry) read as redis.mastername: mymaster") {
		t.Errorf("notes: %q", notes)
	}
}

func TestUpgradeRedisTLS(t *testing.T) {
	for _, yml := range []string{"redis:\n  addr: r:6380\n  enableTLS: true\n", "redis:\n  addr: r:6380\n  tls: {enabled: true}\n"} {
		cfg, notes, err := parseUpgraded(t, yml, "/etc/ssl/certs/ca-certificates.crt")
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(cfg.Redis.TLS.RootCAs, []string{"/etc/ssl/certs/ca-certificates.crt"}) {
			t.Errorf("%q: tls %+v", yml, cfg.Redis.TLS)
		}
		if !containsPrefix(notes, "redis TLS on (enableTLS / tls.enabled, v2) read as redis.tls.rootcas: [/etc/ssl/certs/ca-certificates.crt]") {
			t.Errorf("%q: notes %q", yml, notes)
		}
		// Without a CA bundle the TLS Harbor asked for would silently be
		// plain TCP on v3: refused instead.
		if _, _, err := parseUpgraded(t, yml, ""); err == nil || !strings.Contains(err.Error(), "redis.tls.rootcas") {
			t.Errorf("%q without a CA bundle: err = %v", yml, err)
		}
	}
	// CAs of one's own are kept.
	cfg, _, err := parseUpgraded(t, "redis:\n  addr: r:6380\n  enableTLS: true\n  tls: {rootcas: [/my/ca.pem]}\n", "/sys.pem")
	if err != nil || !reflect.DeepEqual(cfg.Redis.TLS.RootCAs, []string{"/my/ca.pem"}) {
		t.Errorf("own rootcas: %v %+v", err, cfg)
	}
}

func TestUpgradeRedisRefusals(t *testing.T) {
	for yml, want := range map[string]string{
		"redis:\n  addr: a:1\n  addrs: [b:1]\n":                          "both addrs and",
		"redis:\n  addr: \"\"\n":                                         "redis.addr",
		"redis:\n  addr: a:1\n  pool: {maxidle: 1, wait: true}\n":        "redis.pool.wait",
		"redis:\n  addr: a:1\n  pool: 3\n":                               "redis.pool",
		"redis:\n  addr: a:1\n  enableTLS: maybe\n":                      "redis.enableTLS",
		"redis:\n  addr: a:1\n  pool: {maxidle: 1}\n  maxidleconns: 2\n": "both maxidleconns",
	} {
		if _, _, err := parseUpgraded(t, yml, "/ca"); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one naming %q", yml, err, want)
		}
	}
}

// A v3 file is passed through byte for byte; an unknown key is reported
// rather than dropped silently.
func TestUpgradeRedisV3Untouched(t *testing.T) {
	in := []byte("version: 0.1\nredis:\n  addrs: [a:1]\n  poolsize: 3\n")
	out, notes, err := upgradeRedis(in, func() string { return "" })
	if err != nil || !bytes.Equal(in, out) || notes != nil {
		t.Errorf("v3 config changed: %v %q %q", err, out, notes)
	}
	_, notes, err = parseUpgraded(t, "redis:\n  addr: a:1\n  maxconns: 3\n", "")
	if err != nil || !containsPrefix(notes, "redis.maxconns: not a key of distribution v3's redis block") {
		t.Errorf("unknown key: %v %q", err, notes)
	}
}

// LoadConfigNotes reads a file as `shoal registry` does; REGISTRY_REDIS_*
// overrides (Harbor's Helm chart sets the password so) still apply over
// the mapped block.
func TestLoadConfigNotesEnv(t *testing.T) {
	p := filepath.Join(t.TempDir(), "config.yml")
	if err := os.WriteFile(p, []byte("version: 0.1\nstorage: {inmemory: {}}\n"+harborRedis), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("REGISTRY_REDIS_PASSWORD", "from-env")
	cfg, notes, err := LoadConfigNotes(p)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Redis.Options.Password != "from-env" || len(cfg.Redis.Options.Addrs) != 1 || len(notes) != 5 {
		t.Errorf("redis %+v, notes %q", cfg.Redis.Options, notes)
	}
}

func FuzzUpgradeRedis(f *testing.F) {
	f.Add([]byte("version: 0.1\n" + harborRedis))
	f.Add([]byte("redis:\n  addr: a:1,b:2\n  sentinelMasterSet: m\n  tls: {enabled: true}\n"))
	f.Add([]byte("redis: [1, 2]\n"))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > 64<<10 {
			return
		}
		_, _, _ = upgradeRedis(in, func() string { return "/ca" })
	})
}
