#!/usr/bin/env bash
# Baton's main job on this machine: installs what it needs, builds Release, then
#  1. generates text with the real model (stories260K) in one process,
#  2. starts the local cluster of cluster.toml (a router, a Trainium-kind prefill node and
#     a wafer-scale-kind decode node, all running the CPU engine), shows its membership,
#     SIGKILLs the decode node and shows it declared dead, then stops the cluster,
#  3. measures the transport (libfabric tcp) beside plain TCP and memcpy.
# The serving issue turns step 2 into a disaggregated generation through the router.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target baton
baton=build/release/tools/baton
models=../shared/models

echo "== 1. one-process generation (CPU engine, stories260K)"
"$baton" generate --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --temperature 0 --steps 100 "Once upon a time"

echo "== 2. the local cluster (cluster.toml)"
"$baton" check cluster.toml
"$baton" up cluster.toml > build/demo-cluster.log 2>&1 &
up=$!
trap 'kill $up 2>/dev/null || true; wait $up 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  "$baton" status --config cluster.toml 2>/dev/null | grep -c alive | grep -q 3 && break
  sleep 0.2
done
"$baton" status --config cluster.toml
pkill -KILL -f "baton node --config cluster.toml --name decode-0" || true
sleep 0.5
echo "-- after SIGKILL of decode-0:"
"$baton" status --config cluster.toml
kill -TERM $up
wait $up || true
trap - EXIT
echo "-- cluster log: build/demo-cluster.log"

echo "== 3. transport benchmark (libfabric tcp)"
"$baton" bench transport --provider tcp
