package containerdhosts

import (
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"

	"github.com/BurntSushi/toml"
)

// v2DefaultConfigPath is what containerd 2.x's CRI image service reads when
// its config sets no registry options at all.
const v2DefaultConfigPath = "/etc/containerd/certs.d:/etc/docker/certs.d"

// maxImports bounds how many imported config files are followed.
const maxImports = 64

// criRegistryTable is where each containerd config version keeps the CRI
// plugin's registry settings.
func criRegistryTable(version int) string {
	switch version {
	case 3: // containerd 2.x
		return `plugins."io.containerd.cri.v1.images".registry`
	case 2:
		return `plugins."io.containerd.grpc.v1.cri".registry`
	}
	return `plugins.cri.registry`
}

// registrySettings is what one config file says about the CRI registry.
type registrySettings struct {
	version    int
	configPath string
	pathSet    bool
	legacy     bool // deprecated mirrors/configs present
	imports    []string
}

// parseConfig reads one file; an imported file without a version of its own
// is read as the main file's version.
func parseConfig(b []byte, version int) (registrySettings, error) {
	var raw map[string]any
	if _, err := toml.Decode(string(b), &raw); err != nil {
		return registrySettings{}, err
	}
	s := registrySettings{version: version}
	if v, ok := raw["version"].(int64); ok {
		s.version = int(v)
	}
	if imps, ok := raw["imports"].([]any); ok {
		for _, i := range imps {
			if p, ok := i.(string); ok {
				s.imports = append(s.imports, p)
			}
		}
	}
	plugins, _ := raw["plugins"].(map[string]any)
	var cri map[string]any
	switch s.version {
	case 3:
		cri, _ = plugins["io.containerd.cri.v1.images"].(map[string]any)
	case 2:
		cri, _ = plugins["io.containerd.grpc.v1.cri"].(map[string]any)
	default:
		cri, _ = plugins["cri"].(map[string]any)
	}
	reg, _ := cri["registry"].(map[string]any)
	if p, ok := reg["config_path"].(string); ok && p != "" {
		s.configPath, s.pathSet = p, true
	}
	for _, k := range []string{"mirrors", "configs"} {
		if m, ok := reg[k].(map[string]any); ok && len(m) > 0 {
			s.legacy = true
		}
	}
	return s, nil
}

// CheckConfig reads containerd's config file (and the files it imports, as
// containerd merges them: later files win) and returns nil when the CRI
// plugin reads hosts.toml files from certsDir. host is the node's root file
// system (os.DirFS("/host") in a pod mounting it there); configFile and
// certsDir are absolute paths as containerd sees them. The error says what
// to change, in containerd's own terms.
func CheckConfig(host fs.FS, configFile, certsDir string) error {
	readFile := func(p string) ([]byte, error) { return fs.ReadFile(host, strings.TrimPrefix(filepath.Clean(p), "/")) }
	b, err := readFile(configFile)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("containerd config %s does not exist, so config_path is unset: containerd 1.x then reads no hosts.toml at all "+
			"(containerd 2.x defaults to %s). Create it with\n  version = 2\n  [%s]\n    config_path = %q\nand restart containerd; "+
			"on containerd 2.x without a config file, skip this check instead", configFile, v2DefaultConfigPath, criRegistryTable(2), certsDir)
	}
	if err != nil {
		return fmt.Errorf("containerd config: %w", err)
	}
	main, err := parseConfig(b, 0)
	if err != nil {
		return fmt.Errorf("containerd config %s: %w", configFile, err)
	}
	eff := main
	seen := 0
	for _, pattern := range main.imports {
		if !filepath.IsAbs(pattern) {
			pattern = filepath.Join(filepath.Dir(configFile), pattern)
		}
		matches, err := fs.Glob(host, strings.TrimPrefix(filepath.Clean(pattern), "/"))
		if err != nil {
			return fmt.Errorf("containerd config %s: import %q: %w", configFile, pattern, err)
		}
		for _, m := range matches {
			if seen++; seen > maxImports {
				return fmt.Errorf("containerd config %s: more than %d imports", configFile, maxImports)
			}
			ib, err := fs.ReadFile(host, m)
			if err != nil {
				return fmt.Errorf("containerd config import %s: %w", m, err)
			}
			is, err := parseConfig(ib, main.version)
			if err != nil {
				return fmt.Errorf("containerd config import %s: %w", m, err)
			}
			if is.pathSet {
				eff.configPath, eff.pathSet = is.configPath, true
			}
			eff.legacy = eff.legacy || is.legacy
		}
	}
	table := criRegistryTable(main.version)
	paths := eff.configPath
	if !eff.pathSet {
		if main.version != 3 || eff.legacy {
			hint := ""
			if eff.legacy {
				hint = " (and remove the deprecated registry.mirrors/registry.configs, which containerd ignores once config_path is set)"
			}
			return fmt.Errorf("containerd does not read hosts.toml files: config_path is not set in [%s] of %s. "+
				"Add\n  config_path = %q\nthere%s, restart containerd (`systemctl restart containerd`), then restart this pod",
				table, configFile, certsDir, hint)
		}
		paths = v2DefaultConfigPath
	}
	want := filepath.Clean(certsDir)
	for _, p := range strings.Split(paths, ":") {
		if p != "" && filepath.Clean(p) == want {
			return nil
		}
	}
	return fmt.Errorf("containerd reads hosts.toml from %q ([%s] config_path in %s), not from %s where Shoal writes them: "+
		"set the chart's agent.containerd.certsDir to one of those directories, or add %s to config_path and restart containerd",
		paths, table, configFile, certsDir, certsDir)
}
