#!/usr/bin/env bash
# `npm run bench [-- --quick]`: everything the bench measures, in order, then one table of the
# targets (bench/summary.ts), each path as a ratio to its anchor in the same run:
#   1. bench/run.ts: the proxy's own rows (memory hit vs raw node:http in alternating pairs,
#      tracing, workers, 50 MiB, failover, Zipf hit ratio, JWT)
#   2. bench/paths.sh: memory/disk/Redis hits and misses at 1 KiB, 100 KiB, 10 MiB beside s3rver
#      direct, nginx proxy_cache and raw node:http (the shared harness), at 64 and 1 connections
#   3. bench/slices.ts: slice hits beside nginx's slice module, at 64 and 1 connections;
#      bench/cold-herd.ts: a cold object for 16 clients at once over two workers, beside nginx's
#      proxy_cache_lock (origin GETs and bytes, first and last bytes)
#   4. bench/memory.ts: the proxy's peak RSS idle and under the two heavy download scenarios;
#      bench/heap.ts: V8's GC work per request on each path (allocated, survived, promoted)
#   5. bench/s3-api.ts: 8 MiB ranged GETs through the S3 listener vs the HTTP path; SigV4 cost
#   6. bench/representations.ts: image renders per second; cached variant and compressed hits
#      beside plain hits of the same size
# Full: medians of 3 everywhere, about 16 minutes (the first run also writes the origin's 1 GiB and
# 256 MiB objects, kept in $TMPDIR/yatagarasu-bench-origin: ~10 s each). --quick: one short
# rep per case, about 7 minutes. Results stay in the directory printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
quick=
[ "${1:-}" = --quick ] && quick=--quick
out=$(mktemp -d "${TMPDIR:-/tmp}/yatagarasu-bench-results.XXXXXX")
started=$SECONDS
if [ -n "$quick" ]; then
  BENCH_DURATION=${BENCH_DURATION:-2} BENCH_RUNS=${BENCH_RUNS:-1} BENCH_PAIRS=${BENCH_PAIRS:-1} npx tsx bench/run.ts | tee "$out/run.md"
else
  npx tsx bench/run.ts | tee "$out/run.md"
fi
BENCH_PATHS_JSON_DIR=$out bash bench/paths.sh $quick | tee "$out/paths.md"
export BENCH_NO_BUILD=1 # paths.sh built dist/ just now
npx tsx bench/slices.ts $quick --json "$out/slices.json" | tee "$out/slices.md"
npx tsx bench/cold-herd.ts $quick --json "$out/cold-herd.json" | tee "$out/cold-herd.md"
npx tsx bench/memory.ts $quick --json "$out/memory.json" | tee "$out/memory.md"
npx tsx bench/heap.ts $quick | tee "$out/heap.md"
if [ -n "$quick" ]; then
  BENCH_ROUNDS=${BENCH_ROUNDS:-2} npx tsx bench/s3-api.ts | tee "$out/s3-api.md"
  BENCH_DURATION=${BENCH_DURATION:-2} BENCH_PAIRS=${BENCH_PAIRS:-1} npx tsx bench/representations.ts | tee "$out/representations.md"
else
  npx tsx bench/s3-api.ts | tee "$out/s3-api.md"
  npx tsx bench/representations.ts | tee "$out/representations.md"
fi
echo
echo "== targets (issue 17), one run, $(( (SECONDS - started) / 60 )) min; raw results in $out"
npx tsx bench/summary.ts "$out" | tee "$out/summary.md"
