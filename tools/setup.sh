#!/usr/bin/env bash
# Installs the Debian 12 packages Baton builds and tests with. Idempotent: does nothing
# when everything is installed. Run as root or with sudo available.
set -euo pipefail

packages=(
  build-essential cmake ninja-build pkg-config clang clang-format libclang-rt-14-dev
  libcaf-dev libfabric-dev libfabric-bin capnproto libcapnp-dev libssl-dev
  libboost-dev libtomlplusplus-dev libcli11-dev libspdlog-dev libfmt-dev
  nlohmann-json3-dev libxxhash-dev libexpected-dev
  libgtest-dev libgmock-dev libbenchmark-dev
  curl nodejs iproute2 openssl
)
# Debian's npm, unless a nodejs build that bundles npm (NodeSource's) provides it already.
command -v npm >/dev/null || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "setup: installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The clients the HTTP API's tests drive (tests/http/), into build/npm: the official
# openai Node.js SDK and LangChain's JavaScript integration, at pinned versions.
npm_prefix="$(cd "$(dirname "$0")/.." && pwd)/build/npm"
if [ ! -f "$npm_prefix/node_modules/openai/package.json" ] ||
   [ ! -f "$npm_prefix/node_modules/@langchain/openai/package.json" ]; then
  echo "setup: installing the openai Node.js SDK and @langchain/openai into build/npm"
  npm install --prefix "$npm_prefix" --no-audit --no-fund --loglevel=error \
    openai@4 @langchain/openai@1.5.8 @langchain/core@1.4.0
fi
