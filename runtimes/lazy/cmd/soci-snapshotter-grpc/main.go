// Command soci-snapshotter-grpc runs the SOCI snapshotter
// (github.com/awslabs/soci-snapshotter, a library module) as containerd's
// proxy snapshotter. Upstream's own main lives in a separate module
// (…/soci-snapshotter/cmd) that the Go module proxy does not serve, so this
// is the few lines of wiring it needs: read the TOML config, open the bbolt
// metadata store, serve the snapshots API on a unix socket.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"

	"github.com/awslabs/soci-snapshotter/config"
	"github.com/awslabs/soci-snapshotter/fs"
	"github.com/awslabs/soci-snapshotter/metadata"
	"github.com/awslabs/soci-snapshotter/service"
	"github.com/awslabs/soci-snapshotter/service/keychain/dockerconfig"
	"github.com/awslabs/soci-snapshotter/service/resolver"
	"github.com/awslabs/soci-snapshotter/ztoc"
	snapshotsapi "github.com/containerd/containerd/api/services/snapshots/v1"
	"github.com/containerd/containerd/v2/contrib/snapshotservice"
	"github.com/containerd/containerd/v2/pkg/namespaces"
	"github.com/containerd/log"
	metrics "github.com/docker/go-metrics"
	"github.com/sirupsen/logrus"
	bolt "go.etcd.io/bbolt"
	"google.golang.org/grpc"
)

func main() {
	address := flag.String("address", "/run/soci-snapshotter-grpc/soci-snapshotter-grpc.sock", "unix socket of the snapshots API")
	cfgPath := flag.String("config", config.DefaultConfigPath, "TOML configuration")
	root := flag.String("root", config.DefaultSociSnapshotterRootPath, "state directory")
	level := flag.String("log-level", "info", "log level")
	flag.Parse()
	if err := run(*address, *cfgPath, *root, *level); err != nil {
		fmt.Fprintf(os.Stderr, "soci-snapshotter-grpc: %v\n", err)
		os.Exit(1)
	}
}

func run(address, cfgPath, root, level string) error {
	lvl, err := logrus.ParseLevel(level)
	if err != nil {
		return err
	}
	logrus.SetLevel(lvl)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx = log.WithLogger(ctx, log.L)

	cfg, err := config.NewConfigFromToml(cfgPath)
	if err != nil {
		return fmt.Errorf("config %s: %w", cfgPath, err)
	}
	if err := os.MkdirAll(root, 0o700); err != nil {
		return err
	}
	if !cfg.SkipCheckSnapshotterSupported {
		if err := service.Supported(root); err != nil {
			return fmt.Errorf("snapshotter not supported on %s: %w", root, err)
		}
	}
	db, err := bolt.Open(filepath.Join(root, "metadata.db"), 0o600, &bolt.Options{
		NoFreelistSync: true, InitialMmapSize: 64 << 20, FreelistType: bolt.FreelistMapType, NoSync: cfg.MetadataDBNoSync,
	})
	if err != nil {
		return fmt.Errorf("metadata store: %w", err)
	}
	defer db.Close()
	var store metadata.Store = func(sr *io.SectionReader, toc ztoc.TOC, opts ...metadata.Option) (metadata.Reader, error) {
		return metadata.NewReader(db, sr, toc, opts...)
	}
	sn, err := service.NewSociSnapshotterService(ctx, root, &cfg.ServiceConfig,
		service.WithCredsFuncs([]resolver.Credential{dockerconfig.NewDockerConfigKeychain(ctx)}...),
		service.WithFilesystemOptions(fs.WithMetadataStore(store)))
	if err != nil {
		return fmt.Errorf("snapshotter: %w", err)
	}
	defer sn.Close()

	rpc := grpc.NewServer(grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		// The snapshotter reads the namespace from outgoing metadata; containerd
		// sends it as incoming metadata.
		if ns, ok := namespaces.Namespace(ctx); ok {
			ctx = namespaces.WithNamespace(ctx, ns)
		}
		return h(ctx, req)
	}))
	snapshotsapi.RegisterSnapshotsServer(rpc, snapshotservice.FromSnapshotter(sn))

	errc := make(chan error, 2)
	if cfg.MetricsAddress != "" && !cfg.NoPrometheus {
		ml, err := net.Listen("tcp", cfg.MetricsAddress)
		if err != nil {
			return fmt.Errorf("metrics listener: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", metrics.Handler())
		go func() { errc <- http.Serve(ml, mux) }()
	}
	if err := os.MkdirAll(filepath.Dir(address), 0o700); err != nil {
		return err
	}
	_ = os.Remove(address)
	l, err := net.Listen("unix", address)
	if err != nil {
		return fmt.Errorf("listen %s: %w", address, err)
	}
	go func() { errc <- rpc.Serve(l) }()
	log.G(ctx).WithField("address", address).Info("soci-snapshotter-grpc successfully started")
	select {
	case <-ctx.Done():
		rpc.GracefulStop()
		return nil
	case err := <-errc:
		if errors.Is(err, http.ErrServerClosed) {
			return nil
		}
		return err
	}
}
