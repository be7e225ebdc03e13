package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/shoalproject/shoal/internal/containerdhosts"
)

func init() {
	register("node-cleanup", command{
		summary: "undo what the agent put on a node: its hosts.toml files and its cache (the Helm chart's uninstall hook)",
		run:     runNodeCleanup,
	})
	register("node-cleanup-wait", command{
		summary: "wait until the node-cleanup DaemonSet has cleaned every node (the Helm chart's uninstall hook)",
		run:     runNodeCleanupWait,
	})
}

// runNodeCleanup is what the Helm chart's post-delete DaemonSet runs on
// every node the agents ran on:
//
//	shoal node-cleanup --host-root=/host --registry=R … --cache-dir=/var/lib/shoal/agent --hold
//
// and, as that pod's readiness probe, the same flags with --check, so the
// pod is Ready only once nothing of Shoal's is left on its node.
func runNodeCleanup(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("node-cleanup", flag.ContinueOnError)
	var regs stringList
	fs.Var(&regs, "registry", "a registry the agent's init container wrote hosts.toml for, as given to containerd-hosts (repeatable)")
	certsDir := fs.String("certs-dir", "/etc/containerd/certs.d", "containerd's hosts directory, as containerd sees it")
	hostRoot := fs.String("host-root", "/", "where the node's root file system (or the parts named here) is mounted")
	cacheDir := fs.String("cache-dir", "", "the agent's cache directory on the node (agent.cache.hostPath), removed whole")
	check := fs.Bool("check", false, "remove nothing; exit 0 only when nothing named here is left (the readiness probe)")
	hold := fs.Bool("hold", false, "after cleaning, keep running until terminated (a DaemonSet's pod must not exit)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("node-cleanup: unexpected argument %q", fs.Arg(0))
	}
	if len(regs) == 0 && *cacheDir == "" {
		return errors.New("node-cleanup: nothing to clean: give --registry or --cache-dir")
	}
	parsed := make([]containerdhosts.Registry, 0, len(regs))
	for _, s := range regs {
		r, err := containerdhosts.ParseRegistry(s)
		if err != nil {
			return fmt.Errorf("node-cleanup: %w", err)
		}
		parsed = append(parsed, r)
	}
	root := strings.TrimRight(*hostRoot, "/")
	certs := root + "/" + strings.TrimLeft(*certsDir, "/")
	cache := ""
	if *cacheDir != "" {
		// RemoveAll of a mistyped path is the one irreversible thing this
		// command could do: only an absolute path below a top-level
		// directory, the shape of a cache directory (/var/lib/shoal/agent).
		c := filepath.Clean(*cacheDir)
		if !filepath.IsAbs(c) || strings.Count(c, "/") < 2 {
			return fmt.Errorf("node-cleanup: --cache-dir %q: want an absolute path at least two levels deep", *cacheDir)
		}
		cache = root + c
	}
	if *check {
		left, err := containerdhosts.Written(certs, parsed)
		if err != nil {
			return fmt.Errorf("node-cleanup: %w", err)
		}
		if cache != "" {
			if _, err := os.Lstat(cache); err == nil {
				left = append(left, cache)
			} else if !os.IsNotExist(err) {
				return fmt.Errorf("node-cleanup: %w", err)
			}
		}
		if len(left) > 0 {
			return fmt.Errorf("node-cleanup: still on the node: %s", strings.Join(left, ", "))
		}
		return nil
	}
	// One registry at a time: an operator's own hosts.toml for one of them
	// is left in place (and said so) without keeping the others.
	for _, r := range parsed {
		removed, err := containerdhosts.Remove(certs, []containerdhosts.Registry{r})
		for _, p := range removed {
			fmt.Println("removed", p)
		}
		if errors.Is(err, containerdhosts.ErrNotWritten) {
			fmt.Println("kept", err)
			continue
		}
		if err != nil {
			return fmt.Errorf("node-cleanup: %w", err)
		}
	}
	if cache != "" {
		if _, err := os.Lstat(cache); err == nil {
			if err := os.RemoveAll(cache); err != nil {
				return fmt.Errorf("node-cleanup: cache: %w", err)
			}
			fmt.Println("removed", cache)
		}
	}
	if *hold {
		<-ctx.Done()
	}
	return nil
}

// The service account files every pod gets (automountServiceAccountToken).
const serviceAccountDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// runNodeCleanupWait is the chart's post-delete Pod: Helm waits for a hook
// Pod to finish but treats a hook DaemonSet as done once created, so this
// Pod reads the node-cleanup DaemonSet's status from the API server (its
// service account may get that one object, nothing else) until every
// scheduled pod is Ready, which its readiness probe makes mean "this node
// is clean". Helm then deletes the hooks.
func runNodeCleanupWait(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("node-cleanup-wait", flag.ContinueOnError)
	name := fs.String("daemonset", "", "the node-cleanup DaemonSet, in the pod's own namespace")
	interval := fs.Duration("interval", 2*time.Second, "time between two reads of its status")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("node-cleanup-wait: unexpected argument %q", fs.Arg(0))
	}
	if *name == "" {
		return errors.New("node-cleanup-wait: --daemonset is required")
	}
	api, err := inClusterAPI()
	if err != nil {
		return fmt.Errorf("node-cleanup-wait: %w", err)
	}
	path := fmt.Sprintf("/apis/apps/v1/namespaces/%s/daemonsets/%s", api.namespace, *name)
	last := ""
	for {
		var ds daemonSetStatus
		err := api.get(ctx, path, &ds)
		msg := ""
		if err != nil {
			msg = err.Error()
		} else {
			done, m := ds.cleaned()
			if done {
				fmt.Println(m)
				return nil
			}
			msg = m
		}
		if msg != last {
			fmt.Println(msg)
			last = msg
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("node-cleanup-wait: %s: %w", msg, ctx.Err())
		case <-time.After(*interval):
		}
	}
}

// daemonSetStatus is the part of an apps/v1 DaemonSet the wait reads.
type daemonSetStatus struct {
	Metadata struct {
		Generation int64 `json:"generation"`
	} `json:"metadata"`
	Status struct {
		ObservedGeneration     int64 `json:"observedGeneration"`
		DesiredNumberScheduled int32 `json:"desiredNumberScheduled"`
		UpdatedNumberScheduled int32 `json:"updatedNumberScheduled"`
		NumberReady            int32 `json:"numberReady"`
	} `json:"status"`
}

// cleaned reports whether every node the DaemonSet runs on is clean: its
// controller has seen this generation (before that the counts are zeros
// that mean nothing), and every desired pod is of it and Ready.
func (d daemonSetStatus) cleaned() (bool, string) {
	s := d.Status
	switch {
	case s.ObservedGeneration < d.Metadata.Generation:
		return false, "waiting for the DaemonSet controller to see the node-cleanup DaemonSet"
	case s.UpdatedNumberScheduled < s.DesiredNumberScheduled || s.NumberReady < s.DesiredNumberScheduled:
		return false, fmt.Sprintf("%d of %d nodes clean", min(s.NumberReady, s.UpdatedNumberScheduled), s.DesiredNumberScheduled)
	default:
		return true, fmt.Sprintf("all %d nodes clean", s.DesiredNumberScheduled)
	}
}

// apiClient reads the Kubernetes API with the pod's service account, the
// way client-go's in-cluster config does (which the shoal binary does not
// link: one GET does not need it).
type apiClient struct {
	base, namespace, tokenFile string
	http                       *http.Client
}

func inClusterAPI() (*apiClient, error) {
	host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
	if host == "" || port == "" {
		return nil, errors.New("not in a Kubernetes pod (KUBERNETES_SERVICE_HOST/PORT unset)")
	}
	ca, err := os.ReadFile(filepath.Join(serviceAccountDir, "ca.crt"))
	if err != nil {
		return nil, fmt.Errorf("service account CA: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(ca) {
		return nil, errors.New("service account CA: no certificate in ca.crt")
	}
	ns, err := os.ReadFile(filepath.Join(serviceAccountDir, "namespace"))
	if err != nil {
		return nil, fmt.Errorf("service account namespace: %w", err)
	}
	return &apiClient{
		base:      "https://" + net.JoinHostPort(host, port),
		namespace: strings.TrimSpace(string(ns)),
		tokenFile: filepath.Join(serviceAccountDir, "token"),
		http: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		}},
	}, nil
}

// get decodes one object. The token is read per request: projected service
// account tokens are rotated in place.
func (a *apiClient) get(ctx context.Context, path string, out any) error {
	tok, err := os.ReadFile(a.tokenFile)
	if err != nil {
		return fmt.Errorf("service account token: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.base+path, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(tok)))
	req.Header.Set("Accept", "application/json")
	resp, err := a.http.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", path, resp.Status)
	}
	// A DaemonSet is a few KiB; the limit only stops a runaway answer.
	if err := json.NewDecoder(http.MaxBytesReader(nil, resp.Body, 1<<20)).Decode(out); err != nil {
		return fmt.Errorf("GET %s: %w", path, err)
	}
	return nil
}
