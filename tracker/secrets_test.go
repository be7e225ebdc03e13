package tracker

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/secret"
	"github.com/shoalproject/shoal/internal/testenv"
)

// A guessable secret lets anyone mint announce tokens: the tracker must not
// start with one, and must say how to set a real one without echoing it.
func TestSecretsRefused(t *testing.T) {
	t.Setenv("SHOAL_TEST_TRACKER_SECRET", secret.Generate())
	for name, tc := range map[string]struct {
		secrets []string
		want    string
	}{
		"none":                 {nil, "at least one secret"},
		"placeholder":          {[]string{"change-me-current"}, "placeholder"},
		"long placeholder":     {[]string{"change-me-current-0123456789abcdefghijklmnop"}, "placeholder"},
		"short":                {[]string{"s3cr3t-but-short"}, "shorter than 32"},
		"previous placeholder": {[]string{"env:SHOAL_TEST_TRACKER_SECRET", "change-me-previous"}, "secrets[1]"},
		"unset env":            {[]string{"env:SHOAL_TEST_TRACKER_UNSET"}, "SHOAL_TEST_TRACKER_UNSET is not set"},
	} {
		cfg := DefaultConfig()
		cfg.Secrets = config.NewTokens(tc.secrets...)
		err := cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: Validate = %v, want %q", name, err, tc.want)
			continue
		}
		if !strings.Contains(err.Error(), "openssl rand") && name != "unset env" {
			t.Errorf("%s: %v does not say how to make a secret", name, err)
		}
		for _, s := range tc.secrets {
			if len(s) > 8 && !strings.HasPrefix(s, "env:") && strings.Contains(err.Error(), s) {
				t.Errorf("%s: error reflects the secret: %v", name, err)
			}
		}
		if _, err := New(cfg, Deps{Store: NewMemoryStore(time.Hour)}); err == nil {
			t.Errorf("%s: New accepted it", name)
		}
	}
	cfg := DefaultConfig()
	cfg.Secrets = config.NewTokens("env:SHOAL_TEST_TRACKER_SECRET")
	cfg.AllowUnsigned = true
	if err := cfg.Validate(); err != nil {
		t.Fatalf("env secret refused: %v", err)
	}
}

// TestBinaryRefusesShippedPlaceholders starts the real `shoal tracker` with
// the shipped configuration as it was before secrets moved out of it
// (change-me-current) and with the shipped one but its environment variable
// unset: both must exit non-zero with a message naming the key and how to set it.
func TestBinaryRefusesShippedPlaceholders(t *testing.T) {
	if testing.Short() {
		t.Skip("starts processes")
	}
	bin := testenv.ShoalBinary(t)
	shipped, err := os.ReadFile("../configs/tracker.yml")
	if err != nil {
		t.Fatal(err)
	}
	addr := testenv.FreeAddr(t)
	old := strings.Replace(string(shipped), "env:SHOAL_TRACKER_SECRET\n", "change-me-current\n", 1)
	if old == string(shipped) {
		t.Fatal("configs/tracker.yml no longer reads env:SHOAL_TRACKER_SECRET; update this test")
	}
	dir := t.TempDir()
	for _, tc := range []struct {
		name, body, env, want string
	}{
		{"placeholder", old, "", "secrets[0] is a placeholder"},
		{"env unset", string(shipped), "", "SHOAL_TRACKER_SECRET is not set"},
		{"env short", string(shipped), "tooshort", "shorter than 32"},
	} {
		cfg := filepath.Join(dir, tc.name+".yml")
		if err := os.WriteFile(cfg, []byte(tc.body), 0o600); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(bin, "tracker", "--config", cfg, "--addr", addr)
		cmd.Env = append(os.Environ(), "SHOAL_TRACKER_SECRET="+tc.env)
		if tc.env == "" {
			cmd.Env = withoutEnv(os.Environ(), "SHOAL_TRACKER_SECRET")
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var runErr error
		select {
		case runErr = <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
			t.Fatalf("%s: tracker still running after 30s: %s%s", tc.name, stdout.String(), stderr.String())
		}
		out := stderr.Bytes()
		var exit *exec.ExitError
		if !errors.As(runErr, &exit) || exit.ExitCode() == 0 {
			t.Errorf("%s: exit %v, want a non-zero exit; output:\n%s", tc.name, runErr, out)
		}
		if !strings.Contains(string(out), tc.want) || (tc.name != "env unset" && !strings.Contains(string(out), "openssl rand -hex 32")) {
			t.Errorf("%s: output lacks %q and how to set one:\n%s", tc.name, tc.want, out)
		}
		if strings.Contains(stdout.String()+stderr.String(), "tracker listening") {
			t.Errorf("%s: tracker started listening:\n%s", tc.name, out)
		}
	}
	// The same file with the variable set starts.
	cfg := filepath.Join(dir, "ok.yml")
	if err := os.WriteFile(cfg, shipped, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("SHOAL_TRACKER_SECRET", secret.Generate())
	t.Setenv("SHOAL_CLUSTER_SECRET", secret.Generate())
	p := testenv.Start(t, "tracker-ok", bin, []string{"tracker", "--config", cfg, "--addr", addr})
	testenv.WaitHTTP(t, p, "http://"+addr+"/healthz", 30*time.Second)
}

func withoutEnv(env []string, name string) []string {
	out := env[:0:0]
	for _, kv := range env {
		if !strings.HasPrefix(kv, name+"=") {
			out = append(out, kv)
		}
	}
	return out
}
