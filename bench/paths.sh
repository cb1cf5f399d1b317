#!/usr/bin/env bash
# `npm run bench:paths`: every cache path beside its anchor, in one interleaved run per connection
# count, with the shared harness (../shared/perf, see its README): the proxy as a memory hit, a
# disk hit, a Redis hit and a miss (no cache), for 1 KiB, 100 KiB and 10 MiB objects, next to
# s3rver direct (the origin; anchor for misses), nginx proxy_cache (anchor for disk hits) and raw
# node:http (anchor for memory and Redis hits). Runs at 64 connections and at 1.
#   BENCH_PATHS_CONNECTIONS (default "64 1"), extra arguments go to the harness (e.g. --quick,
#   or --reps 3 --duration 6); NODE_BIN picks the node that runs the proxy.
set -euo pipefail
cd "$(dirname "$0")/.."
harness=../shared/perf/proxy-side-by-side.sh
[ -f "$harness" ] || { echo "bench:paths needs ../shared/perf beside the project (the team's shared harness)" >&2; exit 1; }
for connections in ${BENCH_PATHS_CONNECTIONS:-64 1}; do
  echo "== $connections connection(s) =="
  bash "$harness" --connections "$connections" --no-autocannon "$@"
done
