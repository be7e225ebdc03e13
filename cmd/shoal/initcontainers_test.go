package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// The Helm chart's init containers fail with an error naming the command
// and what is wrong, never by doing less than asked.
func TestInitContainerCommandErrors(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "in.yml")
	if err := os.WriteFile(tmpl, []byte("secret: ${SHOAL_TEST_UNSET_VAR}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out.yml")
	tests := []struct {
		name string
		run  func(context.Context, []string) error
		args []string
		want string
	}{
		{"config-render without flags", runConfigRender, nil, "config-render: --in and --out are required"},
		{"config-render template as argument", runConfigRender, []string{"--out", out, tmpl}, `config-render: unexpected argument "` + tmpl + `"`},
		{"config-render missing template", runConfigRender, []string{"--in", filepath.Join(dir, "nope.yml"), "--out", out}, "config-render: open "},
		{"config-render unset variable", runConfigRender, []string{"--in", tmpl, "--out", out}, "config-render: " + tmpl + ": "},
		{"containerd-hosts without registry", runContainerdHosts, nil, "containerd-hosts: at least one --registry is required"},
		{"containerd-hosts registry as argument", runContainerdHosts, []string{"--registry", "docker.io", "--host-root", dir, "--check-config=false", "registry.example.com"}, `containerd-hosts: unexpected argument "registry.example.com"`},
		{"containerd-hosts bad registry", runContainerdHosts, []string{"--registry", "bad host"}, `containerd-hosts: registry "bad host"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.run(context.Background(), tt.args)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a failed config-render left %s behind (%v)", out, err)
	}
}

// The same commands given what they need do their work.
func TestInitContainerCommands(t *testing.T) {
	dir := t.TempDir()
	tmpl := filepath.Join(dir, "in.yml")
	if err := os.WriteFile(tmpl, []byte("secret: ${SHOAL_TEST_SECRET}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHOAL_TEST_SECRET", "s3cr3t")
	out := filepath.Join(dir, "out.yml")
	if err := runConfigRender(context.Background(), []string{"--in", tmpl, "--out", out}); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(out); err != nil || string(b) != "secret: s3cr3t\n" {
		t.Errorf("rendered %q (%v)", b, err)
	}

	root := t.TempDir()
	if err := runContainerdHosts(context.Background(), []string{"--registry", "docker.io", "--host-root", root, "--check-config=false"}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "etc/containerd/certs.d/docker.io/hosts.toml")); err != nil {
		t.Error(err)
	}
}

// What the chart's agent runs when it stops: --remove takes back the
// hosts.toml the init container wrote, under the same --host-root.
func TestContainerdHostsRemove(t *testing.T) {
	root := t.TempDir()
	args := []string{"--host-root", root, "--certs-dir", "/etc/containerd/certs.d", "--check-config=false", "--registry", "registry.example.com:5000"}
	if err := runContainerdHosts(context.Background(), args); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(root, "etc/containerd/certs.d/registry.example.com:5000/hosts.toml")
	if _, err := os.Stat(p); err != nil {
		t.Fatal(err)
	}
	if err := runContainerdHosts(context.Background(), append(args, "--remove")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(p)); !os.IsNotExist(err) {
		t.Fatalf("after --remove: %v", err)
	}
	// Again: nothing to remove is not an error (a pod restarted after a
	// node cleanup stops cleanly).
	if err := runContainerdHosts(context.Background(), append(args, "--remove")); err != nil {
		t.Fatal(err)
	}
}
