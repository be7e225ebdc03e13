package testenv

import (
	"fmt"

	"go.yaml.in/yaml/v3"
)

// RegistryConfig is the one `shoal registry` configuration with the p2p
// middleware that process tests, the e2e cluster and the benchmarks start.
// Each harness sets what it needs; the rest are the defaults of a test
// cluster. Kept in one place so that a new middleware option or a renamed key
// is changed once, not in every harness.
type RegistryConfig struct {
	Addr          string // http.addr
	Root          string // filesystem rootdirectory
	HTTPSecret    string // http.secret (distribution's upload-state HMAC)
	TrackerURL    string // announce URL written into every .torrent
	TrackerSecret string // signs announce tokens
	ClusterSecret string // the join secret the seeder's peer wire uses
	SeederListen  string // the seeder's BitTorrent listener
	BaseURL       string // absolute base of signed URLs; "" derives it from each request
	Debug         string // http.debug.addr; "" for none

	SeederDisabled bool
	SeederRate     int64  // bytes/s, 0 unlimited
	PieceLength    int    // 0: 1 MiB
	URLExpiry      string // "": 10m
	LogLevel       string // "": warn
	AccessLog      bool   // off unless asked for: tests read their own logs
}

// YAML renders the configuration as distribution's config.yml.
func (c RegistryConfig) YAML() string {
	if c.PieceLength == 0 {
		c.PieceLength = 1 << 20
	}
	if c.URLExpiry == "" {
		c.URLExpiry = "10m"
	}
	if c.LogLevel == "" {
		c.LogLevel = "warn"
	}
	type kv = map[string]any
	http := kv{"addr": c.Addr, "secret": c.HTTPSecret}
	if c.Debug != "" {
		http["debug"] = kv{"addr": c.Debug}
	}
	options := kv{
		"piecelength": c.PieceLength,
		"urlexpiry":   c.URLExpiry,
		"tracker":     kv{"url": c.TrackerURL, "secrets": []string{c.TrackerSecret}, "tokenexpiry": "1h"},
		"seeder": kv{
			"disabled":    c.SeederDisabled,
			"listen":      c.SeederListen,
			"ratelimit":   c.SeederRate,
			"idletimeout": "30m",
		},
		"cluster": kv{"secret": c.ClusterSecret},
	}
	if c.BaseURL != "" {
		options["baseurl"] = c.BaseURL
	}
	doc := kv{
		"version": "0.1",
		"log":     kv{"level": c.LogLevel, "accesslog": kv{"disabled": !c.AccessLog}},
		"http":    http,
		"storage": kv{
			"filesystem": kv{"rootdirectory": c.Root},
			"redirect":   kv{"disable": false},
		},
		"middleware": kv{"storage": []kv{{"name": "p2p", "options": options}}},
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		// Only maps of strings, numbers and bools: cannot fail.
		panic(fmt.Sprintf("testenv: registry config: %v", err))
	}
	return string(out)
}
