#!/usr/bin/env bash
# `npm run bench:tls-origin`: what a 1 KiB miss (BENCH_SIZE=<bytes> for another size) costs when
# the origin speaks https, as AWS S3, R2 and GCS do (the shared harness's s3rver speaks plain http). An https origin (bench/tls-origin.mjs,
# self-signed, trusted through NODE_EXTRA_CA_CERTS) and the proxy share CPU 0, wrk runs on CPU 1
# with 64 connections; the proxy's CPU per request comes from /proc. BENCH_BASE_DIST=<dir> adds a
# second build (its dist directory) and alternates the two, 3 runs each. Also printed: the TLS
# connections the origin saw and how many resumed a session.
set -euo pipefail
cd "$(dirname "$0")/.."
node=${NODE_BIN:-node}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$work"' EXIT
port() { "$node" -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'; }
# Pinned where taskset works; started directly (no function, no subshell) so that $! is the process.
on0=() on1=()
if command -v taskset >/dev/null; then on0=(taskset -c 0) on1=(taskset -c 1); fi
"$node" --input-type=module -e '
import { generate } from "selfsigned"
import { writeFileSync } from "node:fs"
const pems = await generate([{ name: "commonName", value: "localhost" }], { keyType: "ec", algorithm: "sha256", extensions: [{ name: "subjectAltName", altNames: [{ type: 7, ip: "127.0.0.1" }] }] })
writeFileSync(process.argv[1] + "/cert.pem", pems.cert); writeFileSync(process.argv[1] + "/key.pem", pems.private)' "$work"
secret=tls-origin-bench-secret-0123456789abcdef
token=$("$node" --input-type=module -e '
import { SignJWT } from "jose"
console.log(await new SignJWT({}).setProtectedHeader({ alg: "HS256" }).setExpirationTime("1h").sign(new TextEncoder().encode(process.argv[1])))' "$secret")
cat > "$work/config.yaml" <<YAML
server:
  address: "127.0.0.1:\${PORT}"
buckets:
  - name: tls
    path_prefix: /tls
    s3:
      bucket: bench
      region: us-east-1
      endpoint: "https://127.0.0.1:\${ORIGIN_PORT}"
      access_key: BENCH
      secret_key: BENCH
    auth:
      enabled: true
      jwt: { secret: "$secret", algorithm: HS256 }
    cache:
      enabled: false
cache:
  enabled: false
logging:
  level: warn
YAML

run() { # dist directory -> one line
  local dist=$1 origin_port proxy_port origin proxy t0 t1 out
  origin_port=$(port)
  proxy_port=$(port)
  "${on0[@]}" "$node" bench/tls-origin.mjs "$origin_port" "$work/cert.pem" "$work/key.pem" "${BENCH_SIZE:-1024}" > "$work/origin.out" &
  origin=$!
  NODE_EXTRA_CA_CERTS="$work/cert.pem" ORIGIN_PORT=$origin_port PORT=$proxy_port "${on0[@]}" "$node" --max-semi-space-size=4 "$dist/main.js" --config "$work/config.yaml" > "$work/proxy.out" 2>&1 &
  proxy=$!
  for _ in $(seq 100); do curl -sf -o /dev/null -H "Authorization: Bearer $token" "http://127.0.0.1:$proxy_port/tls/obj" && break; sleep 0.2; done
  "${on1[@]}" wrk -t1 -c64 -d3s -H "Authorization: Bearer $token" "http://127.0.0.1:$proxy_port/tls/obj" > /dev/null
  t0=$(awk '{print $14+$15}' "/proc/$proxy/stat")
  out=$("${on1[@]}" wrk -t1 -c64 -d4s -H "Authorization: Bearer $token" "http://127.0.0.1:$proxy_port/tls/obj")
  t1=$(awk '{print $14+$15}' "/proc/$proxy/stat")
  kill "$proxy"
  kill -TERM "$origin"
  wait "$proxy" "$origin" 2>/dev/null || true
  local requests errors
  # Objects of 1 MiB and more are counted by the bytes read: wrk counts only finished requests,
  # a few dozen for such objects.
  requests=$(echo "$out" | awk -v size="${BENCH_SIZE:-1024}" '/requests in/ {
    if (size < 1048576) { print $1; exit }
    v = $5; u = substr(v, length(v) - 1); v += 0
    if (u == "KB") v *= 1024; else if (u == "MB") v *= 1048576; else if (u == "GB") v *= 1073741824
    printf "%.1f", v / size }')
  errors=$(echo "$out" | awk '/Non-2xx/ {print $NF}')
  awk -v n="$requests" -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" -v d="$dist" -v e="${errors:-0}" -v o="$(tail -1 "$work/origin.out")" \
    'BEGIN { printf "%-40s %8.1f req/s  %7.0f us CPU per request  non-2xx %s  %s\n", d, n / 4, t * 1e6 / hz / n, e, o }'
}

[ -f dist/main.js ] || { echo "build first: npm run build" >&2; exit 1; }
if [ -n "${BENCH_BASE_DIST:-}" ]; then
  for _ in 1 2 3; do run "$PWD/dist"; run "$BENCH_BASE_DIST"; done
else
  run "$PWD/dist"
fi
