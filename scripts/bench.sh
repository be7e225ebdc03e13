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

section "tracker: announce throughput and p50/p99, in-memory vs Redis store (10k infohashes x 100 peers)"
(
	set -euo pipefail
	work=$(mktemp -d)
	pids=()
	trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT
	freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
	waitport() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
	shoal=${SHOAL_BIN:-$PWD/bin/shoal}
	[ -x "$shoal" ] || go build -o "$shoal" ./cmd/shoal
	go build -o "$work/loadgen" ./tracker/internal/loadgen
	# Random: the tracker refuses short or guessable secrets.
	secret=$(od -An -N32 -tx1 /dev/urandom | tr -d " \n")
	rport=$(freeport)
	redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no >"$work/redis.log" 2>&1 &
	pids+=($!)
	waitport "$rport"
	mport=$(freeport)
	printf 'addr: 127.0.0.1:%s\nsecrets: [%s]\nlog: {level: warn}\n' "$mport" "$secret" >"$work/mem.yml"
	"$shoal" tracker --config "$work/mem.yml" >"$work/mem.log" 2>&1 &
	pids+=($!)
	xport=$(freeport)
	printf 'addr: 127.0.0.1:%s\nsecrets: [%s]\nlog: {level: warn}\nredis:\n  addrs: [127.0.0.1:%s]\n' "$xport" "$secret" "$rport" >"$work/redis.yml"
	"$shoal" tracker --config "$work/redis.yml" >"$work/redis-tracker.log" 2>&1 &
	pids+=($!)
	waitport "$mport"
	waitport "$xport"
	"$work/loadgen" -secret "$secret" -infohashes 10000 -peers 100 -out "$SHOAL_BENCH_OUT" \
		-target "memory=http://127.0.0.1:$mport" -target "redis=http://127.0.0.1:$xport"
	cat "$SHOAL_BENCH_OUT/tracker.md"
)

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
