#!/usr/bin/env bash
# `make bench`: every component's benchmark, each measuring its baseline in
# the same run and writing results under bench/results/ (JSON + Markdown).
set -euo pipefail
cd "$(dirname "$0")/.."
export SHOAL_BENCH_OUT="${SHOAL_BENCH_OUT:-$PWD/bench/results}"
mkdir -p "$SHOAL_BENCH_OUT"

section() { printf '\n==== %s ====\n' "$1"; }

section "registry: direct GET throughput vs upstream, push-to-seeding latency"
go test -count=1 -timeout 30m -run '^TestRegistryBenchmark$' -v ./registry/ | grep -E 'GET|push-to-seeding|^(ok|FAIL|---)'
cat "$SHOAL_BENCH_OUT/registry.md"
