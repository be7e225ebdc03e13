package testenv

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestRegistryConfigStarts checks the rendered file against the real loader:
// the binary refuses unknown keys and weak secrets, so a config that starts
// is one every harness can use.
func TestRegistryConfigStarts(t *testing.T) {
	bin := ShoalBinary(t)
	dir := t.TempDir()
	addr := FreeAddr(t)
	cfg := RegistryConfig{
		Addr:          addr,
		Root:          filepath.Join(dir, "data"),
		HTTPSecret:    "0f3c9a7e5b1d4c2a8e6f0b3d5a7c9e1f2a4b6c8d0e1f3a5b7c9d0e2f4a6b8c0d",
		TrackerURL:    "http://127.0.0.1:1/announce",
		TrackerSecret: "7a9c1e3f5b7d9f1a3c5e7b9d1f3a5c7e9b1d3f5a7c9e1b3d5f7a9c1e3b5d7f9a",
		ClusterSecret: "c2e4a6b8d0f1e3a5c7b9d1f2a4c6e8b0d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1",
		SeederListen:  FreeAddr(t),
		Debug:         FreeAddr(t),
	}
	path := filepath.Join(dir, "registry.yml")
	if err := os.WriteFile(path, []byte(cfg.YAML()), 0o600); err != nil {
		t.Fatal(err)
	}
	p := Start(t, "shoal registry", bin, []string{"registry", "--config", path})
	WaitHTTP(t, p, "http://"+addr+"/v2/", 60*time.Second)
}
