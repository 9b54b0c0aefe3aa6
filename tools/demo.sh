#!/usr/bin/env bash
# Baton's main job on this machine: installs what it needs, builds Release, and runs it.
# For now that is `baton selfcheck` (every wire message through the codec); the serving
# issue turns this into a local cluster streaming a real generation.
set -euo pipefail
cd "$(dirname "$0")/.."
tools/setup.sh
cmake --preset release >/dev/null
cmake --build --preset release --target baton
build/release/tools/baton selfcheck
