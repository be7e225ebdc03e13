# Shoal — build, test and benchmark. `make test` is the single entry point for
# CI and for a fresh machine: it installs the system packages the tests drive
# (redis-server, containerd, iproute2, docker.io, podman, skopeo, chromium) and builds
# every binary they start.

GO          ?= go
BIN         := $(CURDIR)/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
# Upstream registry binary, for drop-in tests and same-run benchmark baselines.
DISTRIBUTION_VERSION := v3.1.2
# helm for the chart tests (deploy/helm), versitygw: the S3 server the
# registry's object-storage tests start.
HELM_VERSION        := v3.22.0
VERSITYGW_VERSION   := v1.8.0
TEST_TIMEOUT ?= 25m
# containerd 2 and crictl for runtimes/ (Debian ships containerd 1.6 only).
# Built once into bin/ (~10 min cold on 2 cores), then free.
CONTAINERD2_VERSION := v2.4.2
CRICTL_VERSION      := v1.34.0

export SHOAL_BIN       := $(BIN)/shoal
export REGISTRY_BIN    := $(BIN)/registry
export CONFORMANCE_BIN := $(BIN)/conformance
export CONTAINERD2_BIN := $(BIN)/containerd-$(CONTAINERD2_VERSION)/containerd
export CTR2_BIN        := $(BIN)/containerd-$(CONTAINERD2_VERSION)/ctr
export CRICTL_BIN      := $(BIN)/crictl-$(CRICTL_VERSION)

export HELM_BIN        := $(BIN)/helm
# ORAS pushes and pulls OCI artifacts through the agent (runtimes/oras_test.go,
# bench/lazy's big-artifact run).
ORAS_VERSION           := v1.3.6
export ORAS_BIN        := $(BIN)/oras-$(ORAS_VERSION)
# Prometheus, for the dashboard test (deploy/grafana): every query of
# shoal.json is evaluated on it. Service discovery plugins are left out
# (remove_all_sd): the test scrapes static targets; it builds in ~3 min cold.
PROMETHEUS_VERSION     := v0.316.0
export PROMETHEUS_BIN  := $(BIN)/prometheus-$(PROMETHEUS_VERSION)
# Kubernetes for make k8s-test (tools/k8s pins the release and etcd).
K8S_VERSION            := v1.34.12
K8S_BIN                := $(BIN)/k8s-$(K8S_VERSION)
# CoreDNS serves the test cluster's names (v1.14.1: built on client-go 0.34,
# the release's).
COREDNS_VERSION        := v1.14.1
COREDNS_BIN            := $(BIN)/coredns-$(COREDNS_VERSION)
# containerd 2's runc shim (containerd runs containers in the k8s test), in
# a directory of its own: the test puts it first in PATH.
export CONTAINERD2_SHIM_BIN := $(BIN)/containerd-shim-$(CONTAINERD2_VERSION)/containerd-shim-runc-v2
# shoal without cgo, for the image the k8s test assembles (no libc in it).
SHOAL_STATIC_BIN       := $(BIN)/shoal-static
export VERSITYGW_BIN   := $(BIN)/versitygw
# The SOCI snapshotter for the lazy-pull test (runtimes/lazy, a module of its
# own so that its dependencies stay out of the shoal binary; the version is
# its go.mod's github.com/awslabs/soci-snapshotter). Upstream's main is a
# module the Go proxy does not serve, so runtimes/lazy/cmd wires the library.
export SOCI_SNAPSHOTTER_BIN := $(BIN)/soci-snapshotter-grpc

# e2eplot draws the e2e charts from the results JSON (tools/e2eplot, a
# module of its own: the plotting library stays out of the shoal module).
E2EPLOT_BIN := $(BIN)/e2eplot
# e2e-plot runs it on those of the named results files that exist: an e2e
# run without network namespaces skips and writes none.
e2e-plot = @for f in $(1); do if [ -f "$$f" ]; then $(E2EPLOT_BIN) "$$f" || exit 1; fi; done

.PHONY: all build shoal-static tools e2eplot prometheus dashboard k8s k8s-test sim deps test unit stress fuzz chart-test conformance bench bench-datapath bench-range bench-artifact bench-tracker bench-e2e e2e fmt vet clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/shoal ./cmd/shoal

# tools are the other programs tests run: the upstream registry (baseline and
# drop-in checks), the OCI conformance suite, pinned in tools/conformance,
# containerd 2 with ctr and crictl (runtimes/), helm (deploy/helm's chart
# tests) and versitygw (the S3 server of registry/s3_test.go).
tools: $(REGISTRY_BIN) $(CONFORMANCE_BIN) $(CONTAINERD2_BIN) $(CTR2_BIN) $(CRICTL_BIN) $(HELM_BIN) $(VERSITYGW_BIN) $(PROMETHEUS_BIN) $(ORAS_BIN) $(SOCI_SNAPSHOTTER_BIN) $(CONTAINERD2_SHIM_BIN)

prometheus: $(PROMETHEUS_BIN)

$(PROMETHEUS_BIN):
	GOBIN=$(BIN)/.prometheus CGO_ENABLED=0 $(GO) install -tags remove_all_sd \
		github.com/prometheus/prometheus/cmd/prometheus@$(PROMETHEUS_VERSION)
	mv $(BIN)/.prometheus/prometheus $@ && rmdir $(BIN)/.prometheus

# dashboard regenerates deploy/grafana/shoal.json and the chart's copy from
# deploy/grafana/dashboard.go (the dashboard test fails on a stale file).
dashboard:
	cd deploy/grafana && $(GO) run ./gen

# k8s builds kube-apiserver, kube-controller-manager, kube-scheduler, kubelet
# and etcd from source (tools/k8s: k8s.io/kubernetes at K8S_VERSION, its
# staging modules replaced by their published versions). Slow cold (over
# 80 min of wall time on a 2-core machine shared with other builds, and
# unfinished there), then cached; kube-proxy joined the tools list late, so
# the rule's target is etcd, renamed last.
k8s: $(K8S_BIN)/etcd

# The release's version, as its own build stamps it (the chart's kubeVersion
# check and the kubelet's version skew read it).
K8S_LDFLAGS := -s -w -X k8s.io/component-base/version.gitVersion=$(K8S_VERSION) \
	-X k8s.io/component-base/version.gitMajor=1 \
	-X k8s.io/component-base/version.gitMinor=$(word 2,$(subst ., ,$(K8S_VERSION))) \
	-X k8s.io/component-base/version.gitTreeState=clean

$(K8S_BIN)/etcd: tools/k8s/go.mod tools/k8s/go.sum
	cd tools/k8s && CGO_ENABLED=0 $(GO) build -o $(K8S_BIN)/ -ldflags '$(K8S_LDFLAGS)' tool
	mv $(K8S_BIN)/server $(K8S_BIN)/etcd

$(COREDNS_BIN):
	GOBIN=$(BIN)/.coredns CGO_ENABLED=0 $(GO) install github.com/coredns/coredns@$(COREDNS_VERSION)
	mv $(BIN)/.coredns/coredns $@ && rmdir $(BIN)/.coredns

$(CONTAINERD2_SHIM_BIN):
	GOBIN=$(dir $@) CGO_ENABLED=0 $(GO) install github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2@$(CONTAINERD2_VERSION)

shoal-static:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '-s -w $(LDFLAGS)' -o $(SHOAL_STATIC_BIN) ./cmd/shoal

# k8s-test is the one real-cluster check (k8s/, docs/kubernetes.md): a
# two-node Kubernetes built from source in network namespaces, the chart
# installed with Shoal's image assembled in Go. About 3.5 min once built;
# not in make test because a fresh clone would first build Kubernetes and
# CoreDNS from source (well over 100 min on a 2-core machine); needs root.
k8s-test: shoal-static k8s $(COREDNS_BIN) $(HELM_BIN) $(REGISTRY_BIN) $(CONTAINERD2_BIN) $(CONTAINERD2_SHIM_BIN) $(CRICTL_BIN)
	@command -v busybox >/dev/null && [ -x /usr/sbin/runc ] && [ -x /usr/lib/cni/bridge ] || \
		apt-get install -y busybox-static runc containernetworking-plugins
	cd k8s && SHOAL_K8S=1 K8S_BIN=$(K8S_BIN) ETCD_BIN=$(K8S_BIN)/etcd COREDNS_BIN=$(COREDNS_BIN) \
		CONTAINERD2_SHIM_BIN=$(CONTAINERD2_SHIM_BIN) \
		SHOAL_STATIC_BIN=$(SHOAL_STATIC_BIN) $(GO) test -count=1 -timeout 45m -v ./...

$(HELM_BIN):
	GOBIN=$(BIN) $(GO) install helm.sh/helm/v3/cmd/helm@$(HELM_VERSION)

$(VERSITYGW_BIN):
	GOBIN=$(BIN) $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION)

$(REGISTRY_BIN):
	GOBIN=$(BIN) $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION)

# The build tags leave out snapshotters the tests do not use (they use
# native); btrfs alone would need C headers (libbtrfs-dev) to build.
$(CONTAINERD2_BIN) $(CTR2_BIN) &:
	GOBIN=$(dir $(CONTAINERD2_BIN)) $(GO) install -tags no_btrfs,no_devmapper,no_zfs \
		github.com/containerd/containerd/v2/cmd/containerd@$(CONTAINERD2_VERSION) \
		github.com/containerd/containerd/v2/cmd/ctr@$(CONTAINERD2_VERSION)

$(CRICTL_BIN):
	GOBIN=$(BIN)/.crictl $(GO) install sigs.k8s.io/cri-tools/cmd/crictl@$(CRICTL_VERSION)
	mv $(BIN)/.crictl/crictl $@ && rmdir $(BIN)/.crictl

$(ORAS_BIN):
	GOBIN=$(BIN)/.oras $(GO) install oras.land/oras/cmd/oras@$(ORAS_VERSION)
	mv $(BIN)/.oras/oras $@ && rmdir $(BIN)/.oras

$(SOCI_SNAPSHOTTER_BIN): runtimes/lazy/go.mod runtimes/lazy/go.sum $(wildcard runtimes/lazy/cmd/soci-snapshotter-grpc/*.go)
	cd runtimes/lazy && $(GO) build -o $@ ./cmd/soci-snapshotter-grpc

$(CONFORMANCE_BIN): tools/conformance/go.mod
	cd tools/conformance && $(GO) build -o $(CONFORMANCE_BIN) github.com/opencontainers/distribution-spec/conformance

e2eplot: $(E2EPLOT_BIN)

$(E2EPLOT_BIN): tools/e2eplot/go.mod tools/e2eplot/go.sum $(wildcard tools/e2eplot/*.go)
	cd tools/e2eplot && $(GO) build -o $(E2EPLOT_BIN) .

# sim is the rollout simulator (tools/sim, a module of its own: nothing of
# it enters the shoal binary). It checks the model against every e2e netns
# cell, then projects N = 1,000 and 10,000 and Kraken's experiment, into
# tools/sim/results (validation: minutes; projections: CPU-hours at
# 10,000 nodes × 1 GiB, see tools/sim/README.md).
SIM_BIN := $(BIN)/sim
sim: $(SIM_BIN)
	cd tools/sim && $(SIM_BIN) validate -out results
	cd tools/sim && $(SIM_BIN) project -out results

$(SIM_BIN): tools/sim/go.mod tools/sim/go.sum $(wildcard tools/sim/*.go) $(wildcard agent/sched/*.go) $(wildcard tracker/*.go)
	cd tools/sim && $(GO) build -o $(SIM_BIN) .

deps:
	./scripts/install-test-deps.sh

vet:
	$(GO) vet ./...
	cd deploy/helm && $(GO) vet ./...
	cd tools/e2eplot && $(GO) vet ./...
	cd tools/trackerload && $(GO) vet ./...
	cd tools/sim && $(GO) vet ./...
	cd deploy/grafana && $(GO) vet ./...
	cd preheat/console/browsertest && $(GO) vet ./...
	cd runtimes/lazy && $(GO) vet ./...
	cd k8s && $(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^third_party/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# test also runs the quick e2e cluster (TestQuick, TestScenarios: ~1 min, needs
# root for network namespaces, skips with a message without), the slow-link
# regression rollout (TestSlowLinks: 16 nodes, ~1 min) and draws its
# chart, so that e2eplot reads what the e2e tests write today.
test: deps build tools vet $(E2EPLOT_BIN)
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	cd preheat/console/browsertest && SHOAL_CONSOLE_RESULTS=$(BIN)/console-results $(GO) test -count=1 -timeout 10m ./...
	cd runtimes/lazy && $(GO) test -count=1 -timeout 10m ./...
	$(MAKE) chart-test
	cd deploy/grafana && $(GO) test -count=1 ./...
	cd tools/e2eplot && $(GO) test -count=1 ./...
	cd tools/sim && $(GO) test -count=1 ./...
	SHOAL_E2E=1 SHOAL_E2E_RESULTS=$(BIN)/e2e-results $(GO) test -count=1 -timeout 10m -run 'TestQuick|TestScenarios|TestSlowLinks' ./e2e/
	$(call e2e-plot,$(BIN)/e2e-results/quick.json $(BIN)/e2e-results/scenarios.json)
	$(MAKE) --no-print-directory fuzz

# fuzz runs every Go fuzz target (parsers of untrusted input) for FUZZTIME
# each, on top of its seed corpus (which plain `go test` runs already).
# Targets are found by name: a new `func FuzzX` in a _test.go file is run
# without touching this file. Go fuzzes one target per invocation. The
# budget is a count of inputs, not a duration: with a duration, Go 1.26's
# coordinator can report "context deadline exceeded" as a failure when the
# deadline lands on a busy worker (go.dev/issue/75804, fixed in Go 1.27).
FUZZTIME ?= 20000x
fuzz:
	@set -e; for f in $$(git ls-files '*_test.go' | grep -v '^third_party/' | xargs grep -l '^func Fuzz'); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz ./$$(dirname $$f) $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f); \
		done; \
	done

# stress runs the packages whose tests race goroutines, timers and real
# processes with the race detector, STRESS_COUNT times each and more packages
# at once than there are cores, so that a test which depends on timing fails
# here rather than once in CI. It prints each failing test and how many runs
# were clean; the log is bin/stress.log.
STRESS_COUNT ?= 5
STRESS_PKGS  ?= ./agent/... ./registry/... ./preheat/... ./driver/... ./tracker/...
stress: build tools
	@mkdir -p $(BIN)
	@{ $(GO) test -race -count=$(STRESS_COUNT) -p 4 -timeout 90m $(STRESS_PKGS); echo $$? > $(BIN)/stress.rc; } 2>&1 | tee $(BIN)/stress.log; \
		echo "stress: $$(grep -c '^--- FAIL' $(BIN)/stress.log) failed test runs in $(STRESS_COUNT) runs of $(STRESS_PKGS)"; \
		grep '^--- FAIL' $(BIN)/stress.log | sed 's/ (.*//' | sort | uniq -c; exit $$(cat $(BIN)/stress.rc)

# unit runs the tests without installing anything; tests needing a missing
# binary or package skip with a message.
unit:
	$(GO) test -count=1 ./...

# chart-test checks the Helm chart without a cluster (deploy/helm is a module
# of its own so that k8s.io/api stays out of the shoal binary): helm lint,
# helm template for every values set in deploy/helm/testdata, objects decoded
# strictly into k8s.io/api types, every rendered config loaded by Shoal.
chart-test: build $(HELM_BIN)
	cd deploy/helm && $(GO) test -count=1 -timeout 10m ./...

conformance: build tools
	$(GO) test -count=1 -run TestConformance -v ./registry/

bench: build tools
	./scripts/bench.sh

# bench-tracker runs only the tracker benchmark (scripts/bench-tracker.sh,
# load from tools/trackerload, a module of its own): 10,000 agents x 20
# swarms announcing, signed, on Redis and in memory; results and CPU
# profiles under bench/results. TRACKER_BASELINE_REF=main (or
# TRACKER_BASELINE_BIN) adds a baseline tracker to the same run, and the
# ratios are to it. ~5 minutes.
bench-tracker: build
	SHOAL_BENCH_OUT=$${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results} ./scripts/bench-tracker.sh

# bench-datapath runs only the data-path benchmark (bench/datapath): one blob
# direct, through an agent cold and warm, from a peer, and to 8 agents at
# once, at 64 MiB and 1 GiB (SHOAL_BENCH_SIZES=64 for a quick run,
# SHOAL_BENCH_PROFILE=1 for CPU profiles). ~2-3 minutes.
bench-datapath: build
	SHOAL_BENCH_OUT=$${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results} $(GO) test -count=1 -timeout 30m -run '^TestDatapathBenchmark$$' -v ./bench/datapath/
	@cat $${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results}/datapath.md

# bench-range runs only the lazy-pull benchmark (bench/lazy,
# docs/lazy-pulls.md): 200 random 1 MiB Range reads of a 1 GiB blob through
# agents cold, from a peer and 8 at once, against direct Range requests to
# the registry in the same run (SHOAL_BENCH_RANGE_MIB, SHOAL_BENCH_RANGES,
# SHOAL_BENCH_RANGE_COLD for other sizes). ~3-5 minutes.
bench-range: build
	SHOAL_BENCH_OUT=$${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results} $(GO) test -count=1 -timeout 40m -run '^TestRangeBenchmark$$' -v ./bench/lazy/ | grep -E '^    range_test.go:[0-9]+: (pushed|cold|peer|8 agents)|^(ok|FAIL|---)'
	@cat $${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results}/lazy-range.md

# bench-artifact runs only the big-artifact benchmark (bench/lazy,
# docs/lazy-pulls.md): an OCI artifact of SHOAL_BENCH_ARTIFACT_GIB GiB
# (default 8) in 4 blobs pushed and pulled with ORAS, direct and through
# agents cold, from a peer and warm, with a cache smaller than the artifact
# and across a kill -9; agent RSS sampled throughout. ~10 minutes at 8 GiB.
bench-artifact: build $(ORAS_BIN)
	SHOAL_BENCH_OUT=$${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results} $(GO) test -count=1 -timeout 90m -run '^TestArtifactBenchmark$$' -v ./bench/lazy/ | grep -E '^    artifact_test.go:[0-9]+: (pushed|ORAS|cache|resume)|^(ok|FAIL|---)'
	@cat $${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results}/lazy-artifact.md

e2e: deps build $(E2EPLOT_BIN)
	SHOAL_E2E=1 $(GO) test -count=1 -timeout 10m -run 'TestQuick|TestScenarios' -v ./e2e/
	$(call e2e-plot,e2e/results/quick.json e2e/results/scenarios.json)

# bench-e2e reproduces e2e/results: 64 MiB at 200 Mbit/s for N = 1..24 (and a
# 20 ms delay run where sch_netem exists), 512 MiB (direct pulls run up to
# N=4, predicted beyond), and 64 MiB at 50 Mbit/s, where the links rather than
# this machine's two cores bind at larger N. ~20 minutes. The charts are
# drawn at the end (an interrupted matrix keeps its JSON: bin/e2eplot
# e2e/results/matrix.json draws it).
E2E_MATRIX = SHOAL_E2E=1 $(GO) test -count=1 -timeout 40m -run TestMatrix -v ./e2e/ -args -matrix
bench-e2e: deps build $(E2EPLOT_BIN)
	$(E2E_MATRIX) -matrix.n 1,2,4,8,16,24 -matrix.mib 64 -matrix.out matrix
	$(E2E_MATRIX) -matrix.n 1,2,4,8,16,24 -matrix.mib 512 -matrix.delay 0 -matrix.out matrix-512 -matrix.direct.maxmib 2048
	$(E2E_MATRIX) -matrix.n 4,8,16,24 -matrix.mib 64 -matrix.mbit 50 -matrix.delay 0 -matrix.out matrix-50mbit -matrix.direct.maxmib 0
	$(call e2e-plot,e2e/results/matrix.json e2e/results/matrix-512.json e2e/results/matrix-50mbit.json)

# bench-scale: cold rollouts of a 64 MiB image (4 layers) to 32, 64 and 128
# real agents on 10 Mbit/s links (the registry's too), then 128 idle agents
# for 60 s (e2e/README.md, "Scale"). 10 Mbit/s keeps the 2-core host under
# ~60 % busy at N = 128 (128 × 10 Mbit/s through TLS, veth and tbf), and
# T* (54 s) long against the fixed costs (settling, the relay of the last
# piece). ~15 minutes; results and charts in e2e/results/scale*.
.PHONY: bench-scale
# From ~32 nodes the kernel's neighbour table (1,024 entries by default,
# shared by every namespace) overflows and nodes lose the registry: raise
# its thresholds, never lower them.
bench-scale: deps build $(E2EPLOT_BIN)
	@for kv in gc_thresh1=16384 gc_thresh2=32768 gc_thresh3=65536; do \
		k=net.ipv4.neigh.default.$${kv%%=*}; v=$${kv#*=}; \
		[ "$$(sysctl -n $$k)" -ge "$$v" ] || sysctl -q -w $$k=$$v; done
	SHOAL_E2E=1 $(GO) test -count=1 -timeout 60m -run TestScale -v ./e2e/ -args -scale -scale.n 32,64,128 -scale.mib 64 -scale.mbit 10
	$(call e2e-plot,e2e/results/scale.json)

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
