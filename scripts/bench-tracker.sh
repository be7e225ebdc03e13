#!/usr/bin/env bash
# `make bench-tracker`: the tracker under the load of a large cluster
# (tools/trackerload: 10,000 agents x 20 swarms by default, announces signed
# as members), on Redis and in memory, each tracker with its own
# redis-server so memory per entry is the store's alone. With
# TRACKER_BASELINE_REF (a git ref, e.g. main) or TRACKER_BASELINE_BIN (a
# shoal binary) the baseline tracker runs first in the same run, on Redis,
# and every ratio in the results is to it; otherwise ratios are to the
# Redis row. CPU profiles of each tracker's steady phase are saved under
# $SHOAL_BENCH_OUT/profiles and their top entries printed.
# Knobs: TRACKER_AGENTS, TRACKER_SWARMS, TRACKER_DURATION, TRACKER_RATE,
# TRACKER_CONCURRENCY.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${SHOAL_BENCH_OUT:-$PWD/bench/results}
mkdir -p "$out"
work=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null; rm -rf "$work"' EXIT
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
waitport() { for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0; sleep 0.1; done; echo "port $1 never opened" >&2; return 1; }
shoal=${SHOAL_BIN:-$PWD/bin/shoal}
[ -x "$shoal" ] || go build -o "$shoal" ./cmd/shoal
(cd tools/trackerload && go build -o "$work/trackerload" .)
baseline=${TRACKER_BASELINE_BIN:-}
if [ -z "$baseline" ] && [ -n "${TRACKER_BASELINE_REF:-}" ]; then
	mkdir "$work/src"
	git archive "$TRACKER_BASELINE_REF" | tar -x -C "$work/src"
	(cd "$work/src" && go build -o "$work/shoal-baseline" ./cmd/shoal)
	baseline=$work/shoal-baseline
fi
# Random: the tracker refuses short or guessable secrets.
secret=$(od -An -N32 -tx1 /dev/urandom | tr -d " \n")
join=$(od -An -N32 -tx1 /dev/urandom | tr -d " \n")
args=()
# start NAME BINARY STORE(redis|memory) SIGNED(0|1)
start() {
	local name=$1 bin=$2 store=$3 signed=$4 port dport rport
	port=$(freeport)
	dport=$(freeport)
	{
		printf 'addr: 127.0.0.1:%s\nsecrets: [%s]\nlog: {level: warn}\ndebug: {addr: "127.0.0.1:%s"}\n' "$port" "$secret" "$dport"
		[ "$signed" = 1 ] && printf 'cluster: {secret: %s}\n' "$join"
		if [ "$store" = redis ]; then
			rport=$(freeport)
			redis-server --port "$rport" --bind 127.0.0.1 --save "" --appendonly no --protected-mode no >"$work/$name-redis.log" 2>&1 &
			pids+=($!)
			waitport "$rport"
			printf 'redis:\n  addrs: [127.0.0.1:%s]\n' "$rport"
			args+=(-redis "$name=127.0.0.1:$rport")
		fi
	} >"$work/$name.yml"
	"$bin" tracker --config "$work/$name.yml" >"$work/$name.log" 2>&1 &
	pids+=($!)
	waitport "$port"
	args+=(-target "$name=http://127.0.0.1:$port" -debug "$name=http://127.0.0.1:$dport")
}
if [ -n "$baseline" ]; then
	# Signed like the others: a tracker without cluster.secret refuses to
	# start unless allowUnsigned, and the load signs its announces.
	start baseline-redis "$baseline" redis 1
fi
start redis "$shoal" redis 1
start memory "$shoal" memory 1
"$work/trackerload" -secret "$secret" -join-secret "$join" -out "$out" \
	-agents "${TRACKER_AGENTS:-10000}" -swarms "${TRACKER_SWARMS:-20}" -duration "${TRACKER_DURATION:-15s}" \
	-rate "${TRACKER_RATE:-20000}" -concurrency "${TRACKER_CONCURRENCY:-32}" "${args[@]}"
for p in "$out"/profiles/tracker-*.pprof; do
	[ -f "$p" ] || continue
	echo "== top of $(basename "$p")"
	go tool pprof -top -nodecount 25 "$p" 2>/dev/null | sed -n '1,32p'
done
cat "$out/tracker.md"
