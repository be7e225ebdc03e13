package driver

import (
	"bytes"
	"fmt"
	"time"

	"github.com/sirupsen/logrus"
	"go.yaml.in/yaml/v3"

	"github.com/shoalproject/shoal/internal/secret"
)

// Options is the `options:` block of the p2p storage middleware. It holds the
// settings of every Shoal part of the registry, so one block in config.yml
// configures them all; configs/registry.yml documents each key.
type Options struct {
	// PieceLength is the BitTorrent piece length of new metainfo. It must be a
	// power of two, at least 16 KiB. Changing it affects new blobs only.
	PieceLength int64 `yaml:"piecelength"`
	// BaseURL is the registry's public URL, used for metadata URLs and web
	// seeds. Empty means "from the request" (Host, X-Forwarded-Proto).
	BaseURL string `yaml:"baseurl"`
	// Secrets sign metadata and piece-range URLs: the first signs, all
	// verify, so a key rotates like the tracker's. Each is the secret itself,
	// env:VAR or file:/path (internal/secret). Empty means http.secret.
	Secrets []string `yaml:"secrets"`
	// Secret is the single-key form of Secrets, kept for existing configs;
	// setting both is an error.
	Secret string `yaml:"secret"`
	// URLExpiry is how long a metadata URL handed out in a redirect is valid.
	URLExpiry time.Duration `yaml:"urlexpiry"`
	// Delivery is how a torrent request is answered: DeliveryRedirect (a
	// 307 to the signed metadata URL) or DeliveryInline (the metadata in
	// the answer itself, for front ends such as Harbor's core that
	// authorize every /v2/ request and pass no other path).
	Delivery string `yaml:"delivery"`

	Tracker TrackerOptions `yaml:"tracker"`
	Seeder  SeederOptions  `yaml:"seeder"`
	Cluster ClusterOptions `yaml:"cluster"`

	// Hook connects the middleware to the registry process embedding it, and
	// Log is the logger it writes to. Neither can come from YAML; the registry
	// package puts them in the options map.
	Hook Hook          `yaml:"-"`
	Log  *logrus.Entry `yaml:"-"`
}

// TrackerOptions says which tracker torrents announce to.
type TrackerOptions struct {
	// URL is the announce URL, e.g. http://tracker:6969/announce.
	URL string `yaml:"url"`
	// Secrets sign announce tokens; the first signs, all verify at the
	// tracker, which must share them.
	Secrets []string `yaml:"secrets"`
	// TokenExpiry bounds how long a torrent file can be used to announce.
	TokenExpiry time.Duration `yaml:"tokenexpiry"`
}

// SeederOptions configures the BitTorrent client inside the registry.
type SeederOptions struct {
	Disabled bool `yaml:"disabled"`
	// Listen is the peer-wire listen address.
	Listen string `yaml:"listen"`
	// PublicAddr is the IP peers should connect to, if not the listen IP.
	PublicAddr string `yaml:"publicaddr"`
	// RateLimit caps upload bytes per second (0: unlimited).
	RateLimit int64 `yaml:"ratelimit"`
	// IdleTimeout drops a torrent nobody downloaded from for this long.
	IdleTimeout time.Duration `yaml:"idletimeout"`
	// MaxOpenFiles caps the blob files the seeder keeps open; the least
	// recently read are closed and reopened on demand.
	MaxOpenFiles int `yaml:"maxopenfiles"`
}

// ClusterOptions make the registry's seeder a member of the Shoal cluster:
// its peer wire is mutual TLS with certificates derived from the join
// secret (internal/cluster), the secret every agent holds.
type ClusterOptions struct {
	// Secret is the join secret: the value, env:NAME or file:/path.
	Secret string `yaml:"secret"`
	// PreviousSecrets are still accepted while members move to Secret.
	PreviousSecrets []string `yaml:"previoussecrets"`
}

// Secrets resolves the join secret and the previous ones, current first,
// refusing empty, short and placeholder values (internal/secret).
func (c ClusterOptions) Secrets() ([]string, error) {
	return secret.ResolveRotating("p2p cluster.secret (the seeder's peer wire is members only)", c.Secret,
		"p2p cluster.previoussecrets", c.PreviousSecrets)
}

// Delivery values.
const (
	DeliveryRedirect = "redirect"
	DeliveryInline   = "inline"
)

// Defaults.
const (
	DefaultPieceLength = 1 << 20
	// DefaultSeederMaxOpenFiles leaves most of a default 1024-descriptor
	// limit to distribution's own connections and files.
	DefaultSeederMaxOpenFiles = 256
	minPieceLength            = 16 << 10
	maxPieceLength            = 64 << 20
)

// HookOption and LogOption are the keys under which the registry package
// passes its Hook and its logger.
const (
	HookOption = "shoal.hook"
	LogOption  = "shoal.log"
)

// ParseOptions decodes the middleware options map as distribution hands it
// over (YAML decoded into maps) and fills in defaults.
func ParseOptions(m map[string]any) (Options, error) {
	o := Options{}
	plain := make(map[string]any, len(m))
	for k, v := range m {
		switch k {
		case HookOption:
			h, ok := v.(Hook)
			if !ok {
				return o, fmt.Errorf("p2p: option %s has type %T", HookOption, v)
			}
			o.Hook = h
			continue
		case LogOption:
			l, ok := v.(*logrus.Entry)
			if !ok {
				return o, fmt.Errorf("p2p: option %s has type %T", LogOption, v)
			}
			o.Log = l
			continue
		}
		plain[k] = v
	}
	// A round trip through YAML turns the nested map[any]any of distribution's
	// parser into our typed struct, durations ("5m") included.
	b, err := yaml.Marshal(plain)
	if err != nil {
		return o, fmt.Errorf("p2p options: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	if err := dec.Decode(&o); err != nil && err.Error() != "EOF" {
		return o, fmt.Errorf("p2p options: %w", err)
	}
	if o.Secret != "" {
		if len(o.Secrets) > 0 {
			return o, fmt.Errorf("p2p options: set secrets or secret, not both")
		}
		o.Secrets, o.Secret = []string{o.Secret}, ""
	}
	if o.PieceLength == 0 {
		o.PieceLength = DefaultPieceLength
	}
	if o.PieceLength < minPieceLength || o.PieceLength > maxPieceLength || o.PieceLength&(o.PieceLength-1) != 0 {
		return o, fmt.Errorf("p2p options: piecelength %d must be a power of two between %d and %d", o.PieceLength, minPieceLength, maxPieceLength)
	}
	if o.URLExpiry == 0 {
		o.URLExpiry = 5 * time.Minute
	}
	switch o.Delivery {
	case "":
		o.Delivery = DeliveryRedirect
	case DeliveryRedirect, DeliveryInline:
	default:
		return o, fmt.Errorf("p2p options: delivery %q: want %s or %s", o.Delivery, DeliveryRedirect, DeliveryInline)
	}
	if o.Tracker.TokenExpiry == 0 {
		o.Tracker.TokenExpiry = 24 * time.Hour
	}
	if o.Seeder.Listen == "" {
		o.Seeder.Listen = ":6881"
	}
	if o.Seeder.IdleTimeout == 0 {
		o.Seeder.IdleTimeout = 30 * time.Minute
	}
	if o.Seeder.MaxOpenFiles == 0 {
		o.Seeder.MaxOpenFiles = DefaultSeederMaxOpenFiles
	}
	if o.Seeder.MaxOpenFiles < 0 {
		return o, fmt.Errorf("p2p options: seeder.maxopenfiles %d must be positive", o.Seeder.MaxOpenFiles)
	}
	return o, nil
}
