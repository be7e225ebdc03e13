// Package containerdhosts points containerd at the Shoal agent: it writes
// `certs.d/<registry>/hosts.toml` files (containerd's registry host
// configuration, read on every pull, no restart needed) and checks that
// containerd's CRI plugin reads that directory at all (`config_path`), which
// is the step that silently does nothing when missed. Spegel's
// `configuration` command and Dragonfly's dfinit do the same; this one
// refuses to guess when config_path is unset instead of rewriting
// containerd's config.
package containerdhosts

import (
	"bytes"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// DefaultHost is containerd's fallback directory name, used for every
// registry that has no directory of its own.
const DefaultHost = "_default"

// Registry is one registry whose pulls go through the agent.
type Registry struct {
	// Host is the registry as it appears in image names (registry.example.com,
	// host:5000, docker.io) or DefaultHost.
	Host string
	// Server is where containerd goes when the agent fails; empty means
	// https://<Host> (https://registry-1.docker.io for docker.io) and, for
	// DefaultHost, no server line (containerd then uses the image's host).
	Server string
}

var hostRE = regexp.MustCompile(`^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?(:[0-9]{1,5})?$`)

// ParseRegistry reads HOST or HOST=SERVER_URL.
func ParseRegistry(s string) (Registry, error) {
	host, server, _ := strings.Cut(s, "=")
	r := Registry{Host: host, Server: server}
	return r, r.validate()
}

func (r Registry) validate() error {
	if r.Host != DefaultHost && !hostRE.MatchString(r.Host) {
		return fmt.Errorf("registry %q: want host[:port] as in image names, or %s", r.Host, DefaultHost)
	}
	if r.Server != "" {
		if err := checkURL(r.Server); err != nil {
			return fmt.Errorf("registry %s: server: %w", r.Host, err)
		}
	}
	return nil
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || strings.ContainsAny(s, "\"\\\n") {
		return fmt.Errorf("%q is not an http(s)://host[:port] URL", s)
	}
	return nil
}

func (r Registry) server() string {
	switch {
	case r.Server != "":
		return r.Server
	case r.Host == DefaultHost:
		return ""
	case r.Host == "docker.io":
		return "https://registry-1.docker.io"
	}
	return "https://" + r.Host
}

// HostsTOML is the hosts.toml for r: the agent at mirror first (pull and
// resolve; containerd adds ?ns=<registry>, which selects the agent's
// upstream), the registry itself after it when the agent is unreachable.
func HostsTOML(r Registry, mirror string) ([]byte, error) {
	if err := r.validate(); err != nil {
		return nil, err
	}
	if err := checkURL(mirror); err != nil {
		return nil, fmt.Errorf("mirror: %w", err)
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s: pulls of %s go through the Shoal agent.\n", writtenMark, r.Host)
	if s := r.server(); s != "" {
		fmt.Fprintf(&b, "server = %q\n", s)
	}
	fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", mirror)
	return b.Bytes(), nil
}

// Write writes <certsDir>/<host>/hosts.toml for every registry, each file
// replaced atomically so containerd never reads half of one.
func Write(certsDir string, regs []Registry, mirror string) ([]string, error) {
	var written []string
	for _, r := range regs {
		body, err := HostsTOML(r, mirror)
		if err != nil {
			return written, err
		}
		dir := filepath.Join(certsDir, r.Host)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return written, fmt.Errorf("hosts.toml for %s: %w", r.Host, err)
		}
		p := filepath.Join(dir, "hosts.toml")
		tmp, err := os.CreateTemp(dir, ".hosts.toml.*")
		if err != nil {
			return written, fmt.Errorf("hosts.toml for %s: %w", r.Host, err)
		}
		_, werr := tmp.Write(body)
		cerr := tmp.Close()
		if werr == nil {
			werr = cerr
		}
		if werr == nil {
			werr = os.Chmod(tmp.Name(), 0o644)
		}
		if werr == nil {
			werr = os.Rename(tmp.Name(), p)
		}
		if werr != nil {
			os.Remove(tmp.Name())
			return written, fmt.Errorf("hosts.toml for %s: %w", r.Host, werr)
		}
		written = append(written, p)
	}
	return written, nil
}

// writtenMark starts every hosts.toml Write makes; Remove deletes only
// files that carry it, never one an operator wrote for the same registry.
const writtenMark = "# Written by `shoal containerd-hosts`"

// ErrNotWritten is Remove's error for a hosts.toml that Write did not
// write (an operator's own): it is left in place.
var ErrNotWritten = errors.New("was not written by shoal containerd-hosts")

// Written lists the hosts.toml files of regs under certsDir that Write
// wrote and that are still there: empty once Remove has undone Write.
func Written(certsDir string, regs []Registry) ([]string, error) {
	var found []string
	for _, r := range regs {
		if err := r.validate(); err != nil {
			return found, err
		}
		p := filepath.Join(certsDir, r.Host, "hosts.toml")
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return found, fmt.Errorf("hosts.toml for %s: %w", r.Host, err)
		}
		if bytes.HasPrefix(b, []byte(writtenMark)) {
			found = append(found, p)
		}
	}
	return found, nil
}

// Remove undoes Write: it deletes <certsDir>/<host>/hosts.toml of each
// registry when Shoal wrote it, and the directory when nothing else is left
// in it, so containerd goes back to pulling from the registry itself.
// Registries with no such file are skipped.
func Remove(certsDir string, regs []Registry) ([]string, error) {
	var removed []string
	for _, r := range regs {
		if err := r.validate(); err != nil {
			return removed, err
		}
		dir := filepath.Join(certsDir, r.Host)
		p := filepath.Join(dir, "hosts.toml")
		b, err := os.ReadFile(p)
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return removed, fmt.Errorf("hosts.toml for %s: %w", r.Host, err)
		}
		if !bytes.HasPrefix(b, []byte(writtenMark)) {
			return removed, fmt.Errorf("hosts.toml for %s: %s %w; left in place", r.Host, p, ErrNotWritten)
		}
		if err := os.Remove(p); err != nil {
			return removed, fmt.Errorf("hosts.toml for %s: %w", r.Host, err)
		}
		removed = append(removed, p)
		// Fails, harmlessly, when the directory holds certificates or
		// other files of the operator's.
		_ = os.Remove(dir)
	}
	return removed, nil
}
