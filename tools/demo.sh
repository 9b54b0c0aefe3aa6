#!/usr/bin/env bash
# Baton's main job on this machine: installs what it needs, builds Release, then
#  1. generates text with the real model (stories260K) in one process, the reference,
#  2. starts the local cluster of cluster.toml (two routers, two Trainium-kind prefill
#     nodes and two wafer-scale-kind decode nodes, all running the CPU engine), streams the
#     same generation through the router client (prefill on one node, KV cache moved by
#     libfabric RMA into a decode node, tokens streamed back) and checks it is
#     byte-identical, SIGKILLs a decode node in the middle of a long generation and shows
#     the request finish identically on the other, then SIGKILLs the router a stream goes
#     through and shows the client resume it on the other router identically (baton up
#     restarts both killed nodes), then stops the cluster,
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

# kill_while_streaming NAME NODE ROUTER...: the long seeded generation through ROUTERs,
# node NODE SIGKILLed once 200 bytes have arrived; output in $out/long-NAME.txt.
kill_while_streaming() {
  local name=$1 node=$2 routers=() r
  shift 2
  for r in "$@"; do routers+=(--router "$r"); done
  "$baton" generate "${routers[@]}" --temperature 0.8 --top-p 0.95 --seed 7 --steps 500 \
    "Lily and Ben" > "$out/long-$name.txt" 2> "$out/long-$name.err" &
  local gen=$!
  for _ in $(seq 500); do [ "$(stat -c %s "$out/long-$name.txt")" -gt 200 ] && break; sleep 0.005; done
  pkill -KILL -f "baton node --config cluster.toml --name $node" || true
  wait $gen
  cat "$out/long-$name.err"
}

echo "-- a long seeded generation; decode-0 is SIGKILLed while it streams:"
"$baton" generate --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --temperature 0.8 --top-p 0.95 --seed 7 --steps 500 "Lily and Ben" > "$out/long-single.txt" 2>/dev/null
kill_while_streaming cluster decode-0 "$router"
cmp "$out/long-single.txt" "$out/long-cluster.txt" \
  && echo "-- byte-identical to the one-process output despite the kill"
curl -s http://127.0.0.1:9100/metrics | grep -E '^baton_router_(retries|requests)_total' || true

echo "-- the same generation through both routers; router-0 is SIGKILLed while it streams:"
kill_while_streaming router router-0 127.0.0.1:7000 127.0.0.1:7001
cmp "$out/long-single.txt" "$out/long-router.txt" \
  && echo "-- byte-identical: the client resumed the stream on router-1"
sleep 1
"$baton" status --config cluster.toml
kill -TERM $up
wait $up || true
trap 'rm -rf "$out"' EXIT
echo "-- cluster log: $log"

echo "== 3. transport benchmark (libfabric tcp)"
"$baton" bench transport --provider tcp
