# Shoal — build, test and benchmark. `make test` is the single entry point for
# CI and for a fresh machine: it installs the system packages the tests drive
# (redis-server, containerd, iproute2) and builds every binary they start.

GO          ?= go
BIN         := $(CURDIR)/bin
VERSION     ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS     := -X main.version=$(VERSION)
# Upstream registry binary, for drop-in tests and same-run benchmark baselines.
DISTRIBUTION_VERSION := v3.1.2
TEST_TIMEOUT ?= 25m

export SHOAL_BIN       := $(BIN)/shoal
export REGISTRY_BIN    := $(BIN)/registry
export CONFORMANCE_BIN := $(BIN)/conformance

.PHONY: all build tools deps test unit fuzz conformance bench bench-datapath bench-e2e e2e fmt vet clean

all: build

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o $(BIN)/shoal ./cmd/shoal

# tools are the other programs tests run: the upstream registry (baseline and
# drop-in checks) and the OCI conformance suite, pinned in tools/conformance.
tools: $(REGISTRY_BIN) $(CONFORMANCE_BIN)

$(REGISTRY_BIN):
	GOBIN=$(BIN) $(GO) install github.com/distribution/distribution/v3/cmd/registry@$(DISTRIBUTION_VERSION)

$(CONFORMANCE_BIN): tools/conformance/go.mod
	cd tools/conformance && $(GO) build -o $(CONFORMANCE_BIN) github.com/opencontainers/distribution-spec/conformance

deps:
	./scripts/install-test-deps.sh

vet:
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go' | grep -v '^third_party/')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi

# test also runs the quick e2e cluster (TestQuick, TestScenarios: ~1 min, needs
# root for network namespaces, skips with a message without).
test: deps build tools vet
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) fuzz
	SHOAL_E2E=1 SHOAL_E2E_RESULTS=$(BIN)/e2e-results $(GO) test -count=1 -timeout 10m -run 'TestQuick|TestScenarios' ./e2e/

# fuzz runs every Go fuzz target (parsers of untrusted input) for FUZZTIME
# each, on top of its seed corpus (which plain `go test` runs already).
# Targets are found by name: a new `func FuzzX` in a _test.go file is run
# without touching this file. Go fuzzes one target per invocation.
FUZZTIME ?= 5s
fuzz:
	@set -e; for f in $$(git ls-files '*_test.go' | grep -v '^third_party/' | xargs grep -l '^func Fuzz'); do \
		for t in $$(sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' $$f); do \
			echo "fuzz ./$$(dirname $$f) $$t ($(FUZZTIME))"; \
			$(GO) test -run '^$$' -fuzz "^$$t$$" -fuzztime $(FUZZTIME) ./$$(dirname $$f); \
		done; \
	done

# unit runs the tests without installing anything; tests needing a missing
# binary or package skip with a message.
unit:
	$(GO) test -count=1 ./...

conformance: build tools
	$(GO) test -count=1 -run TestConformance -v ./registry/

bench: build tools
	./scripts/bench.sh

# bench-datapath runs only the data-path benchmark (bench/datapath): one blob
# direct, through an agent cold and warm, from a peer, and to 8 agents at
# once, at 64 MiB and 1 GiB (SHOAL_BENCH_SIZES=64 for a quick run,
# SHOAL_BENCH_PROFILE=1 for CPU profiles). ~2-3 minutes.
bench-datapath: build
	SHOAL_BENCH_OUT=$${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results} $(GO) test -count=1 -timeout 30m -run '^TestDatapathBenchmark$$' -v ./bench/datapath/
	@cat $${SHOAL_BENCH_OUT:-$(CURDIR)/bench/results}/datapath.md

e2e: deps build
	SHOAL_E2E=1 $(GO) test -count=1 -timeout 10m -run 'TestQuick|TestScenarios' -v ./e2e/

# bench-e2e reproduces e2e/results: 64 MiB at 200 Mbit/s for N = 1..24 (and a
# 20 ms delay run where sch_netem exists), 512 MiB (direct pulls run up to
# N=4, predicted beyond), and 64 MiB at 50 Mbit/s, where the links rather than
# this machine's two cores bind at larger N. ~20 minutes.
E2E_MATRIX = SHOAL_E2E=1 $(GO) test -count=1 -timeout 40m -run TestMatrix -v ./e2e/ -args -matrix
bench-e2e: deps build
	$(E2E_MATRIX) -matrix.n 1,2,4,8,16,24 -matrix.mib 64 -matrix.out matrix
	$(E2E_MATRIX) -matrix.n 1,2,4,8,16,24 -matrix.mib 512 -matrix.delay 0 -matrix.out matrix-512 -matrix.direct.maxmib 2048
	$(E2E_MATRIX) -matrix.n 4,8,16,24 -matrix.mib 64 -matrix.mbit 50 -matrix.delay 0 -matrix.out matrix-50mbit -matrix.direct.maxmib 0

fmt:
	gofmt -w $$(git ls-files '*.go')

clean:
	rm -rf $(BIN)
