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

section "registry on S3 (Versity gateway): seeder, piece endpoint and GET, S3 vs filesystem in the same run"
go test -count=1 -timeout 20m -run '^TestS3Benchmark$' -v ./registry/ | grep -E 'MiB/s|^(ok|FAIL|---)'
cat "$SHOAL_BENCH_OUT/registry-s3.md"

section "tracker: 10,000 agents x 20 swarms, signed announces: fill, closed-loop and 20k/s open-loop throughput and p50/p99, memory per entry; Redis vs memory (and TRACKER_BASELINE_REF if set)"
./scripts/bench-tracker.sh

section "agent: 256 MiB image pull, direct vs agent cold vs agent warm"
go test -count=1 -timeout 10m -run '^TestAgentBenchmark$' -v ./agent/ | grep -E '^(ok|FAIL|---)'
cat "$SHOAL_BENCH_OUT/agent.md"

section "preheat: 256 MiB image to 8 agents, preheat vs direct pull, registry egress"
go test -count=1 -timeout 15m -run '^TestPreheatBenchmark$' -v ./preheat/ | grep -E '^(ok|FAIL|---)'
cat "$SHOAL_BENCH_OUT/preheat.md"

section "data path: one blob via registry, agent cold/warm, peer, 8-agent swarm (64 MiB, 1 GiB): wall, CPU-s/GiB, registry egress"
# SHOAL_BENCH_SIZES=64 for a quick run; SHOAL_BENCH_PROFILE=1 adds CPU
# profiles of every process under $SHOAL_BENCH_OUT/profiles/.
if [ "${SHOAL_BENCH_PROFILE:-}" = 1 ]; then # the whole log: it has the profiles' top entries
	go test -count=1 -timeout 30m -run '^TestDatapathBenchmark$' -v ./bench/datapath/
else
	go test -count=1 -timeout 30m -run '^TestDatapathBenchmark$' -v ./bench/datapath/ |
		grep -E '^    datapath_test.go:[0-9]+: (====|pushed|[0-9]+[MG]iB +[a-z0-9]+ +wall|note:)|^(ok|FAIL|---)'
fi
cat "$SHOAL_BENCH_OUT/datapath.md"

section "lazy pulls: 200 random 1 MiB ranges of a 1 GiB blob through agents (cold, peer, 8 at once) vs direct registry Range requests"
make --no-print-directory bench-range

section "big artifacts: ORAS pull of an 8 GiB artifact direct and through agents (cold, peer, warm), eviction, resume after kill -9, agent RSS"
make --no-print-directory bench-artifact
