package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

type sample struct {
	Addr  string `yaml:"addr"`
	Log   Log    `yaml:"log"`
	Redis Redis  `yaml:"redis"`
	Items []struct {
		Name string `yaml:"name"`
	} `yaml:"items"`
}

func TestDecode(t *testing.T) {
	renamed := Renamed{
		"log_level":        `use log.level`,
		"redis.mastername": `use redis.masterName`,
		"items.user":       `use items.name`,
	}
	for _, tc := range []struct {
		name, in, wantErr string
		check             func(*sample) bool
	}{
		{name: "empty file keeps defaults", in: "", check: func(s *sample) bool { return s.Addr == "default" && s.Log.Level == "info" }},
		{name: "comments only", in: "# nothing\n", check: func(s *sample) bool { return s.Addr == "default" }},
		{name: "override", in: "addr: x\nlog: {level: debug}\n", check: func(s *sample) bool { return s.Addr == "x" && s.Log.Level == "debug" && s.Log.Format == "text" }},
		{name: "unknown top-level key", in: "adr: x\n", wantErr: `line 1: unknown key "adr"`},
		{name: "unknown nested key", in: "log:\n  levle: x\n", wantErr: `line 2: unknown key "levle"`},
		{name: "renamed top-level", in: "addr: x\nlog_level: debug\n", wantErr: `line 2: key "log_level" is no longer read: use log.level`},
		{name: "renamed nested", in: "redis:\n  mastername: m\n", wantErr: `key "redis.mastername" is no longer read: use redis.masterName`},
		{name: "renamed in a list", in: "items:\n  - user: a\n", wantErr: `key "items.user" is no longer read`},
		{name: "wrong type", in: "redis: {dialTimeout: soon}\n", wantErr: "line 1"},
		{name: "not yaml", in: "addr: [\n", wantErr: "line"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sample{Addr: "default", Log: DefaultLog()}
			err := Decode([]byte(tc.in), &s, renamed)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(&s) {
				t.Fatalf("decoded %+v", s)
			}
		})
	}
}

func TestLoadNamesFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "c.yml")
	if err := os.WriteFile(p, []byte("bogus: 1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var s sample
	err := Load("tracker config", p, &s, nil)
	if err == nil || !strings.HasPrefix(err.Error(), "tracker config "+p+": ") {
		t.Fatalf("err = %v", err)
	}
	if err := Load("tracker config", filepath.Join(t.TempDir(), "missing.yml"), &s, nil); err == nil {
		t.Fatal("a missing file loaded")
	}
}

func TestRedisValidate(t *testing.T) {
	ok := DefaultRedis("shoal:")
	ok.Addrs = []string{"127.0.0.1:6379"}
	for _, tc := range []struct {
		name  string
		edit  func(*Redis)
		valid bool
	}{
		{"disabled", func(r *Redis) { r.Addrs = nil; r.DialTimeout = 0 }, true},
		{"defaults", func(*Redis) {}, true},
		{"zero timeout", func(r *Redis) { r.ReadTimeout = 0 }, false},
		{"no pool", func(r *Redis) { r.PoolSize = 0 }, false},
		{"no prefix", func(r *Redis) { r.KeyPrefix = "" }, false},
		{"empty addr", func(r *Redis) { r.Addrs = []string{""} }, false},
		{"negative db", func(r *Redis) { r.DB = -1 }, false},
	} {
		r := ok
		tc.edit(&r)
		if err := r.Validate(); (err == nil) != tc.valid {
			t.Errorf("%s: err = %v, want valid=%v", tc.name, err, tc.valid)
		}
	}
}

func TestRedisCredentialsFromEnv(t *testing.T) {
	t.Setenv("SHOAL_TEST_REDIS_PW", "pw")
	r := DefaultRedis("p:")
	r.Addrs = []string{"127.0.0.1:1"}
	r.Password = NewCredential("env:SHOAL_TEST_REDIS_PW")
	c, err := r.NewClient()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r.Password = NewCredential("env:SHOAL_TEST_REDIS_UNSET")
	if _, err := r.NewClient(); err == nil || strings.Contains(err.Error(), "pw") {
		t.Fatalf("err = %v", err)
	}
}

func TestLogValidate(t *testing.T) {
	if err := DefaultLog().Validate(); err != nil {
		t.Fatal(err)
	}
	if err := (Log{Level: "loud", Format: "text"}).Validate(); err == nil {
		t.Fatal("level loud accepted")
	}
	if err := (Log{Level: "info", Format: "xml"}).Validate(); err == nil {
		t.Fatal("format xml accepted")
	}
	if l := (Log{Level: "debug", Format: "json"}).NewLogger("x"); !l.Logger.IsLevelEnabled(4) || l.Data["component"] != "x" {
		t.Fatal("logger not configured")
	}
}
