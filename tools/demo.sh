#!/usr/bin/env bash
# Baton's main job on this machine: installs what it needs, builds Release, then
#  1. generates text with the real model (stories260K) in one process, the reference,
#  2. starts the local cluster of cluster.toml (a router, two Trainium-kind prefill nodes
#     and two wafer-scale-kind decode nodes, all running the CPU engine), streams the same
#     generation through the router client (prefill on one node, KV cache moved by
#     libfabric RMA into a decode node, tokens streamed back) and checks it is
#     byte-identical, SIGKILLs a decode node in the middle of a long generation and shows
#     the request finish identically on the other, then stops the cluster,
#  3. measures the transport (libfabric tcp) beside plain TCP and memcpy.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target baton
baton=build/release/tools/baton
models=../shared/models
out=$(mktemp -d)
log=build/demo-cluster.log

echo "== 1. one-process generation (CPU engine, stories260K)"
"$baton" generate --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --temperature 0 --steps 100 "Once upon a time" | tee "$out/single.txt"

echo "== 2. the local cluster (cluster.toml)"
"$baton" check cluster.toml
"$baton" up cluster.toml > "$log" 2>&1 &
up=$!
trap 'kill $up 2>/dev/null || true; wait $up 2>/dev/null || true; rm -rf "$out"' EXIT
for _ in $(seq 100); do grep -q '^ready: ' "$log" && break; sleep 0.1; done
grep '^ready: ' "$log" || { echo "the cluster did not become ready; see $log"; exit 1; }
router=$(sed -n 's/^ready: router native=\([^ ]*\).*/\1/p' "$log")
sleep 0.5  # let the router learn every worker, so both of each role serve
"$baton" status --config cluster.toml

echo "-- disaggregated generation through the router client ($router):"
"$baton" generate --router "$router" --temperature 0 --steps 100 "Once upon a time" \
  2> "$out/cluster.err" | tee "$out/cluster.txt"
cat "$out/cluster.err"
cmp "$out/single.txt" "$out/cluster.txt" && echo "-- byte-identical to the one-process output"

echo "-- a long seeded generation; decode-0 is SIGKILLed while it streams:"
"$baton" generate --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --temperature 0.8 --top-p 0.95 --seed 7 --steps 500 "Lily and Ben" > "$out/long-single.txt" 2>/dev/null
"$baton" generate --router "$router" --temperature 0.8 --top-p 0.95 --seed 7 --steps 500 \
  "Lily and Ben" > "$out/long-cluster.txt" 2> "$out/long-cluster.err" &
gen=$!
for _ in $(seq 500); do [ "$(stat -c %s "$out/long-cluster.txt")" -gt 200 ] && break; sleep 0.005; done
pkill -KILL -f "baton node --config cluster.toml --name decode-0" || true
wait $gen
cat "$out/long-cluster.err"
cmp "$out/long-single.txt" "$out/long-cluster.txt" \
  && echo "-- byte-identical to the one-process output despite the kill"
curl -s http://127.0.0.1:9100/metrics | grep -E '^baton_router_(retries|requests)_total' || true
sleep 0.5
"$baton" status --config cluster.toml
kill -TERM $up
wait $up || true
trap 'rm -rf "$out"' EXIT
echo "-- cluster log: $log"

echo "== 3. transport benchmark (libfabric tcp)"
"$baton" bench transport --provider tcp
