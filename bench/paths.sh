#!/usr/bin/env bash
# `npm run bench:paths`: every cache path beside its anchor, in one interleaved run per connection
# count, with the shared harness (../shared/perf, see its README): the proxy as a memory hit, a
# disk hit, a Redis hit and a miss (no cache), for 1 KiB, 100 KiB and 10 MiB objects, next to
# s3rver direct (the origin; anchor for misses), nginx proxy_cache (anchor for disk hits) and raw
# node:http (anchor for memory and Redis hits), and nginx as a plain relay (bench/nginx-relay.sh:
# proxy_pass, no cache), what a miss costs the best C proxy on the same core, and a minimal Node.js
# relay (bench/node-relay.mjs: node:http + undici, nothing else), what the usual Node.js stack
# costs for a miss. Runs at 64 connections and at 1: three runs of the harness, each starting
# every server afresh, one rep each (5 s at 64 connections, 3 s at 1; --quick: one run, one 3 s
# rep). The summary takes the median over the runs: on this kind of VM a process can run 1.5-2x
# slower than the next one for its whole life (the host's scheduling), so reps of one process
# share its luck, and medians over several processes do not.
#   BENCH_PATHS_CONNECTIONS (default "64 1"); BENCH_PATHS_RUNS (default 3; --quick 1);
#   BENCH_PATHS_JSON_DIR: also write each run's results as paths-<connections>-<run>.json there
#   (bench/summary.ts reads them); other arguments go to the harness (e.g. --duration 6);
#   NODE_BIN picks the node that runs the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=../shared/perf/proxy-side-by-side.sh
[ -f "$harness" ] || { echo "bench:paths needs ../shared/perf beside the project (the team's shared harness)" >&2; exit 1; }
quick=
if [ "${1:-}" = --quick ]; then
  quick=1
  shift
fi
# The proxy runs with the node flags it ships with (src/main.ts's shebang, Docker, npm start); the
# harness starts it as `$NODE_BIN dist/main.js`, which bypasses the shebang.
export NODE_BIN="${NODE_BIN:-node} --max-semi-space-size=4"
runs=${BENCH_PATHS_RUNS:-3}
[ -n "$quick" ] && runs=${BENCH_PATHS_RUNS:-1}
for connections in ${BENCH_PATHS_CONNECTIONS:-64 1}; do
  for run in $(seq "$runs"); do
    echo "== $connections connection(s), run $run of $runs =="
    args=(--connections "$connections" --no-autocannon --only origin,nginx,node-raw)
    if [ -n "$quick" ]; then
      args=(--quick "${args[@]}")
    elif [ "$connections" = 1 ]; then
      args+=(--reps 1 --duration 3 --warmup 1)
    else
      args+=(--reps 1 --duration 5 --warmup 2)
    fi
    [ -n "${BENCH_PATHS_JSON_DIR:-}" ] && args+=(--json "$BENCH_PATHS_JSON_DIR/paths-$connections-$run.json")
    args+=(--target nginx-relay --cmd "exec bash '$PWD/bench/nginx-relay.sh'" --path /perf-bucket/obj-1k,/perf-bucket/obj-100k,/perf-bucket/obj-10m)
    args+=(--target node-relay --cmd "exec $NODE_BIN '$PWD/bench/node-relay.mjs'" --path /perf-bucket/obj-1k,/perf-bucket/obj-100k,/perf-bucket/obj-10m)
    bash "$harness" "${args[@]}" "$@"
  done
done
