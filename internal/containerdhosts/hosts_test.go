package containerdhosts

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/BurntSushi/toml"
)

func TestHostsTOML(t *testing.T) {
	for _, tc := range []struct {
		reg        string
		wantServer string
	}{
		{"registry.example.com", "https://registry.example.com"},
		{"docker.io", "https://registry-1.docker.io"},
		{"shoal-registry.shoal.svc:5000=http://shoal-registry.shoal.svc:5000", "http://shoal-registry.shoal.svc:5000"},
		{"_default", ""},
	} {
		r, err := ParseRegistry(tc.reg)
		if err != nil {
			t.Fatal(err)
		}
		b, err := HostsTOML(r, "http://127.0.0.1:65001")
		if err != nil {
			t.Fatal(err)
		}
		// Decoded as containerd decodes it (its hosts.toml is TOML with these keys).
		var got struct {
			Server string `toml:"server"`
			Host   map[string]struct {
				Capabilities []string `toml:"capabilities"`
			} `toml:"host"`
		}
		md, err := toml.Decode(string(b), &got)
		if err != nil {
			t.Fatalf("%s: %v\n%s", tc.reg, err, b)
		}
		if len(md.Undecoded()) > 0 {
			t.Fatalf("%s: unexpected keys %v", tc.reg, md.Undecoded())
		}
		if got.Server != tc.wantServer {
			t.Errorf("%s: server %q, want %q", tc.reg, got.Server, tc.wantServer)
		}
		h, ok := got.Host["http://127.0.0.1:65001"]
		if !ok || strings.Join(h.Capabilities, ",") != "pull,resolve" {
			t.Errorf("%s: host entry %#v", tc.reg, got.Host)
		}
	}
}

func TestParseRegistryRejects(t *testing.T) {
	for _, s := range []string{"", "a/b", "../etc", "x\"y", "host:99999999", "reg.io=ftp://x", "reg.io=http://a\"b", "-a.io"} {
		if _, err := ParseRegistry(s); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
	if _, err := HostsTOML(Registry{Host: "a.io"}, "127.0.0.1:65001"); err == nil {
		t.Error("mirror without scheme accepted")
	}
}

func TestWrite(t *testing.T) {
	dir := t.TempDir()
	regs := []Registry{{Host: "docker.io"}, {Host: DefaultHost}}
	paths, err := Write(dir, regs, "http://127.0.0.1:65001")
	if err != nil {
		t.Fatal(err)
	}
	if len(paths) != 2 || paths[1] != filepath.Join(dir, "_default", "hosts.toml") {
		t.Fatalf("paths %v", paths)
	}
	// Rewriting replaces the file and leaves no temporary behind.
	if _, err := Write(dir, regs[:1], "http://127.0.0.1:65003"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(paths[0])
	if !strings.Contains(string(b), "127.0.0.1:65003") {
		t.Fatalf("not rewritten:\n%s", b)
	}
	ents, _ := os.ReadDir(filepath.Join(dir, "docker.io"))
	if len(ents) != 1 {
		t.Fatalf("left behind: %v", ents)
	}
}

func TestCheckConfig(t *testing.T) {
	const certs = "/etc/containerd/certs.d"
	for _, tc := range []struct {
		name  string
		files map[string]string
		err   string // empty: accepted
	}{
		{name: "v2 set", files: map[string]string{"etc/containerd/config.toml": "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n"}},
		{name: "v2 list", files: map[string]string{"etc/containerd/config.toml": "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/docker/certs.d:/etc/containerd/certs.d/\"\n"}},
		{name: "v2 unset", files: map[string]string{"etc/containerd/config.toml": "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry]\n"},
			err: `config_path is not set in [plugins."io.containerd.grpc.v1.cri".registry]`},
		{name: "v2 mirrors", files: map[string]string{"etc/containerd/config.toml": "version = 2\n[plugins.\"io.containerd.grpc.v1.cri\".registry.mirrors.\"docker.io\"]\n  endpoint = [\"https://x\"]\n"},
			err: "remove the deprecated registry.mirrors"},
		{name: "v1 unset", files: map[string]string{"etc/containerd/config.toml": "[plugins.cri]\n"}, err: "[plugins.cri.registry]"},
		{name: "v3 default", files: map[string]string{"etc/containerd/config.toml": "version = 3\n"}},
		{name: "v3 elsewhere", files: map[string]string{"etc/containerd/config.toml": "version = 3\n[plugins.\"io.containerd.cri.v1.images\".registry]\n  config_path = \"/srv/hosts\"\n"},
			err: `reads hosts.toml from "/srv/hosts"`},
		{name: "import sets it", files: map[string]string{
			"etc/containerd/config.toml":       "version = 2\nimports = [\"conf.d/*.toml\"]\n",
			"etc/containerd/conf.d/shoal.toml": "[plugins.\"io.containerd.grpc.v1.cri\".registry]\n  config_path = \"/etc/containerd/certs.d\"\n",
		}},
		{name: "missing", files: map[string]string{}, err: "does not exist"},
		{name: "garbage", files: map[string]string{"etc/containerd/config.toml": "version = = 2"}, err: "containerd config /etc/containerd/config.toml"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			fsys := fstest.MapFS{}
			for p, c := range tc.files {
				fsys[p] = &fstest.MapFile{Data: []byte(c)}
			}
			err := CheckConfig(fsys, "/etc/containerd/config.toml", certs)
			if tc.err == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Fatalf("err = %v, want %q", err, tc.err)
			}
		})
	}
}

// Remove deletes what Write wrote (and the emptied directory), keeps a
// directory that holds other files, refuses a hosts.toml it did not write,
// and skips registries it never configured.
func TestRemove(t *testing.T) {
	dir := t.TempDir()
	regs := []Registry{{Host: "a.example.com"}, {Host: "b.example.com:5000"}}
	if _, err := Write(dir, regs, "http://127.0.0.1:65001"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "b.example.com:5000", "ca.crt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if w, err := Written(dir, append(regs, Registry{Host: "never.example.com"})); err != nil || len(w) != 2 {
		t.Fatalf("Written before Remove = %v, %v; want both files", w, err)
	}
	removed, err := Remove(dir, append(regs, Registry{Host: "never.example.com"}))
	if err != nil || len(removed) != 2 {
		t.Fatalf("Remove = %v, %v; want both files", removed, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "a.example.com")); !os.IsNotExist(err) {
		t.Fatalf("a.example.com left behind: %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "b.example.com:5000", "ca.crt")); err != nil {
		t.Fatalf("the operator's file went with it: %v", err)
	}
	own := filepath.Join(dir, "c.example.com")
	if err := os.MkdirAll(own, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(own, "hosts.toml"), []byte("server = \"https://c.example.com\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if w, err := Written(dir, append(regs, Registry{Host: "c.example.com"})); err != nil || len(w) != 0 {
		t.Fatalf("Written after Remove, with a foreign file = %v, %v; want none", w, err)
	}
	if _, err := Remove(dir, []Registry{{Host: "c.example.com"}}); !errors.Is(err, ErrNotWritten) || !strings.Contains(err.Error(), "not written by") {
		t.Fatalf("Remove of a foreign hosts.toml: %v", err)
	}
	if _, err := os.Stat(filepath.Join(own, "hosts.toml")); err != nil {
		t.Fatal("a foreign hosts.toml was removed")
	}
}
