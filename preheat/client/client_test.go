package client_test

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoalproject/shoal/internal/config"
	"github.com/shoalproject/shoal/internal/nodeapi"
	"github.com/shoalproject/shoal/internal/testenv"
	"github.com/shoalproject/shoal/preheat"
	"github.com/shoalproject/shoal/preheat/client"
)

const token = "client-test-token-0123456789abcdef"

// startRegistry runs the upstream registry binary with filesystem storage.
func startRegistry(t *testing.T) string {
	bin := testenv.ToolBinary(t, "REGISTRY_BIN")
	dir := t.TempDir()
	addr := testenv.FreeAddr(t)
	cfg := fmt.Sprintf("version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\nstorage:\n  filesystem:\n    rootdirectory: %s\nhttp:\n  addr: %s\n", dir, addr)
	path := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	p := testenv.Start(t, "registry", bin, []string{"serve", path})
	testenv.WaitHTTP(t, p, "http://"+addr+"/v2/", 20*time.Second)
	return addr
}

// startPreheat serves a replica with an in-memory store that allows
// registry and guards writes with token.
func startPreheat(t *testing.T, registry string) string {
	cfg := preheat.DefaultConfig()
	cfg.Registry = "http://" + registry
	cfg.Cluster.Secret = config.NewSecret("client-test-join-secret-0123456789abcdef")
	cfg.APITokens = []config.Secret{config.NewSecret(token)}
	cfg.Log.Level = "warn"
	// A node record straight in the store: the job needs a target, and the
	// client is what is under test, not enrollment. The node's address
	// accepts connections and never answers, so the job stays running
	// until it is canceled.
	hang, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hang.Close() })
	go func() {
		for {
			c, err := hang.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	st := preheat.NewMemoryStore()
	hb := nodeapi.Heartbeat{ID: "n1", Address: "https://" + hang.Addr().String(), Groups: []string{"default"}}
	key, _, err := ed25519.GenerateKey(nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st.EnrollNode(context.Background(), time.Now(), hb.ID, key, time.Now(), time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := st.PutNode(context.Background(), time.Now(), preheat.Node{Heartbeat: hb}, time.Minute); err != nil {
		t.Fatal(err)
	}
	svc, err := preheat.New(cfg, preheat.Deps{Store: st})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- svc.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return "http://" + l.Addr().String()
}

func TestClient(t *testing.T) {
	reg := startRegistry(t)
	img := reg + "/library/app:v1"
	testenv.PushRandomImage(t, img, 1024, 2)
	base := startPreheat(t, reg)
	ctx := context.Background()
	c := client.New(base+"/", token, nil)

	v, err := c.CreateJob(ctx, preheat.JobRequest{Image: img})
	if err != nil {
		t.Fatal(err)
	}
	if v.ID == 0 || v.Image != img || len(v.Blobs) != 3 { // config + 2 layers
		t.Fatalf("created %+v", v.Job)
	}
	got, err := c.Job(ctx, v.ID)
	if err != nil || got.ID != v.ID || got.Image != img {
		t.Fatalf("Job(%d) = %+v, %v", v.ID, got, err)
	}
	jobs, err := c.Jobs(ctx, 1)
	if err != nil || len(jobs) != 1 || jobs[0].ID != v.ID {
		t.Fatalf("Jobs(1) = %+v, %v", jobs, err)
	}
	j, err := c.CancelJob(ctx, v.ID)
	if err != nil || j.ID != v.ID || j.State != preheat.StateCanceled {
		t.Fatalf("CancelJob = %+v, %v", j, err)
	}

	var ae *client.Error
	if _, err := c.CancelJob(ctx, v.ID); !errors.As(err, &ae) || ae.Status != http.StatusConflict {
		t.Fatalf("second cancel: %v", err)
	}
	if _, err := c.Job(ctx, v.ID+100); !errors.As(err, &ae) || ae.Status != http.StatusNotFound || ae.Message == "" {
		t.Fatalf("unknown job: %v", err)
	}
	if _, err := client.New(base, "", nil).CreateJob(ctx, preheat.JobRequest{Image: img}); !errors.As(err, &ae) || ae.Status != http.StatusUnauthorized {
		t.Fatalf("no token: %v", err)
	}
	_, err = c.CreateJob(ctx, preheat.JobRequest{Image: "elsewhere.example/app:v1"})
	if !errors.As(err, &ae) || ae.Status != http.StatusBadRequest || ae.Code == "" || !strings.Contains(err.Error(), ae.Message) {
		t.Fatalf("foreign registry: %v", err)
	}
	if strings.Contains(err.Error(), token) {
		t.Fatal("error carries the token")
	}
}
