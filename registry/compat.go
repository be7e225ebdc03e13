package registry

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"github.com/distribution/distribution/v3/configuration"
	"go.yaml.in/yaml/v3"
)

// Harbor (its installer's registry/config.yml.jinja and its Helm chart's
// registry-cm.yaml) writes the redis block of distribution v2 and of its own
// patched v2.8 registry ("v2.8.3-patch-redis"): addr, sentinelMasterSet,
// enableTLS, pool {maxidle, maxactive, idletimeout}. distribution v3's parser
// ignores keys it does not know, so on v3 those configs lose their Redis
// address without a word and the registry stops at start with "redis
// configuration required to use for layerinfo cache". upgradeRedis rewrites
// the v2-era keys to their v3 form before distribution parses the file, and
// says what it did: one note per key.

// systemCABundles are where the CA bundle of the usual base images lives
// (Debian/Ubuntu/Alpine, then Photon/RHEL): v3 turns TLS on only through
// redis.tls, and enableTLS meant "TLS, system roots".
var systemCABundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt"}

// v3RedisKeys are the keys of distribution v3's redis block
// (configuration.RedisOptions and tls); anything else there is ignored by
// distribution, so it is reported rather than dropped silently.
var v3RedisKeys = map[string]bool{
	"addrs": true, "clientname": true, "db": true, "protocol": true, "username": true, "password": true,
	"sentinelusername": true, "sentinelpassword": true, "maxretries": true, "minretrybackoff": true,
	"maxretrybackoff": true, "dialtimeout": true, "readtimeout": true, "writetimeout": true,
	"contexttimeoutenabled": true, "poolfifo": true, "poolsize": true, "pooltimeout": true,
	"minidleconns": true, "maxidleconns": true, "maxactiveconns": true, "connmaxidletime": true,
	"connmaxlifetime": true, "maxredirects": true, "readonly": true, "routebylatency": true,
	"routerandomly": true, "mastername": true, "disableidentity": true, "identitysuffix": true,
	"unstableresp3": true, "tls": true,
}

// LoadConfigNotes is LoadConfig that also returns what it changed in the
// file's v2-era keys, one sentence per key, for the caller to log.
func LoadConfigNotes(path string) (*configuration.Configuration, []string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("open registry config: %w", err)
	}
	b, notes, err := upgradeRedis(b, caBundle)
	if err != nil {
		return nil, nil, fmt.Errorf("parse registry config %s: %w", path, err)
	}
	cfg, err := configuration.Parse(bytes.NewReader(b))
	if err != nil {
		return nil, nil, fmt.Errorf("parse registry config %s: %w", path, err)
	}
	return cfg, notes, nil
}

// caBundle is the first system CA bundle present.
func caBundle() string {
	for _, p := range systemCABundles {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// upgradeRedis maps the v2-era keys of the top-level redis block to v3's.
// A file without them is returned as it is, byte for byte. bundle finds
// the system CA bundle for enableTLS.
func upgradeRedis(in []byte, bundle func() string) ([]byte, []string, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(in, &doc); err != nil {
		// distribution's parser reports it in its own words.
		return in, nil, nil
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		return in, nil, nil
	}
	redis := mapValue(doc.Content[0], "redis")
	if redis == nil || redis.Kind != yaml.MappingNode {
		return in, nil, nil
	}
	var notes []string
	out := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	set := func(key string, v *yaml.Node) error {
		if mapValue(redis, key) != nil || mapValue(out, key) != nil {
			return fmt.Errorf("redis: both %s and a v2 key that maps to it are set; keep one", key)
		}
		out.Content = append(out.Content, scalar(key), v)
		return nil
	}
	tlsOn := false
	var tlsNode *yaml.Node
	for i := 0; i+1 < len(redis.Content); i += 2 {
		k, v := redis.Content[i], redis.Content[i+1]
		switch key := strings.ToLower(k.Value); key {
		case "addr":
			var addrs []string
			for _, a := range strings.Split(v.Value, ",") {
				if a = strings.TrimSpace(a); a != "" {
					addrs = append(addrs, a)
				}
			}
			if v.Kind != yaml.ScalarNode || len(addrs) == 0 {
				return nil, nil, fmt.Errorf("redis.addr: want host:port (or comma-separated sentinels), got %q", v.Value)
			}
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq"}
			for _, a := range addrs {
				seq.Content = append(seq.Content, scalar(a))
			}
			if err := set("addrs", seq); err != nil {
				return nil, nil, err
			}
			notes = append(notes, fmt.Sprintf("redis.%s: %s (distribution v2) read as redis.addrs: [%s] (v3)", k.Value, v.Value, strings.Join(addrs, ", ")))
		case "sentinelmasterset":
			if err := set("mastername", v); err != nil {
				return nil, nil, err
			}
			notes = append(notes, fmt.Sprintf("redis.%s: %s (Harbor's v2 registry) read as redis.mastername: %s (v3: addrs are then Sentinels)", k.Value, v.Value, v.Value))
		case "pool":
			if v.Kind != yaml.MappingNode {
				return nil, nil, fmt.Errorf("redis.pool: want a mapping of maxidle, maxactive, idletimeout")
			}
			for j := 0; j+1 < len(v.Content); j += 2 {
				pk, pv := v.Content[j], v.Content[j+1]
				var to string
				switch strings.ToLower(pk.Value) {
				case "maxidle":
					to = "maxidleconns"
				case "maxactive":
					// redigo's MaxActive caps the connections of the pool (0:
					// no cap); go-redis's PoolSize is that cap (0: its default).
					to = "poolsize"
				case "idletimeout":
					to = "connmaxidletime"
				default:
					return nil, nil, fmt.Errorf("redis.pool.%s: not a key of distribution v2's redis pool (maxidle, maxactive, idletimeout)", pk.Value)
				}
				if err := set(to, pv); err != nil {
					return nil, nil, err
				}
				notes = append(notes, fmt.Sprintf("redis.pool.%s: %s (distribution v2) read as redis.%s: %s (v3)", pk.Value, pv.Value, to, pv.Value))
			}
		case "enabletls":
			var on bool
			if err := v.Decode(&on); err != nil {
				return nil, nil, fmt.Errorf("redis.%s: want true or false: %w", k.Value, err)
			}
			tlsOn = tlsOn || on
			if !on {
				notes = append(notes, fmt.Sprintf("redis.%s: false (Harbor's v2 registry) is v3's default: no redis.tls block, plain TCP", k.Value))
			}
		case "tls":
			tlsNode = v
		default:
			if !v3RedisKeys[key] {
				notes = append(notes, fmt.Sprintf("redis.%s: not a key of distribution v3's redis block; distribution ignores it", k.Value))
			}
			out.Content = append(out.Content, k, v)
		}
	}
	if tlsNode != nil {
		// v2's tls: {enabled: bool}; v3's tls: {certificate, key, rootcas}.
		if en := mapValue(tlsNode, "enabled"); en != nil {
			var on bool
			if err := en.Decode(&on); err != nil {
				return nil, nil, fmt.Errorf("redis.tls.enabled: want true or false: %w", err)
			}
			tlsOn = tlsOn || on
			tlsNode = withoutKey(tlsNode, "enabled")
			if !on {
				notes = append(notes, "redis.tls.enabled: false (distribution v2) is v3's default: plain TCP")
			}
		}
	}
	if tlsOn {
		if tlsNode == nil {
			tlsNode = &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
		}
		// v3 dials TLS only when redis.tls names a certificate or CAs; with
		// neither, Harbor's TLS would silently become plain TCP.
		if mapValue(tlsNode, "rootcas") == nil && mapValue(tlsNode, "certificate") == nil {
			ca := bundle()
			if ca == "" {
				return nil, nil, fmt.Errorf("redis: TLS is on (enableTLS/tls.enabled), but distribution v3 dials TLS only with redis.tls.rootcas or a client certificate, and no system CA bundle was found at %s; set redis.tls.rootcas", strings.Join(systemCABundles, " or "))
			}
			seq := &yaml.Node{Kind: yaml.SequenceNode, Tag: "!!seq", Content: []*yaml.Node{scalar(ca)}}
			tlsNode.Content = append(tlsNode.Content, scalar("rootcas"), seq)
			notes = append(notes, fmt.Sprintf("redis TLS on (enableTLS / tls.enabled, v2) read as redis.tls.rootcas: [%s] (v3: TLS verified against the system CA bundle)", ca))
		}
	}
	if tlsNode != nil && len(tlsNode.Content) > 0 {
		out.Content = append(out.Content, scalar("tls"), tlsNode)
	}
	if len(notes) == 0 {
		return in, nil, nil
	}
	*redis = *out
	b, err := yaml.Marshal(&doc)
	if err != nil {
		return nil, nil, fmt.Errorf("redis: rewrite v2 keys: %w", err)
	}
	return b, notes, nil
}

// mapValue is the value of key in mapping m (case-insensitive, as v2-era
// spellings vary), or nil.
func mapValue(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if strings.EqualFold(m.Content[i].Value, key) {
			return m.Content[i+1]
		}
	}
	return nil
}

func withoutKey(m *yaml.Node, key string) *yaml.Node {
	c := &yaml.Node{Kind: yaml.MappingNode, Tag: "!!map"}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if !strings.EqualFold(m.Content[i].Value, key) {
			c.Content = append(c.Content, m.Content[i], m.Content[i+1])
		}
	}
	return c
}

// scalar is a string node, quoted: distribution's YAML 1.1 parser would
// read some plain host:port forms as numbers (sexagesimal).
func scalar(s string) *yaml.Node {
	return &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!str", Value: s, Style: yaml.DoubleQuotedStyle}
}
