#!/usr/bin/env bash
# Baton as operators and developers install it. Under a temporary prefix (`cmake --install`):
# the public client headers compile on their own, the example builds against the CMake
# package and against pkg-config, and streams a generation from a local cluster run by the
# installed `baton`, byte-identical to the one-process engine. Then the .deb packages (CPack)
# are installed on this machine with apt-get, checked (`baton --version`, `baton check
# /etc/baton/cluster.toml`, the systemd unit, the example built against /usr) and removed,
# leaving nothing behind.
# Usage: package_test.sh BUILD_DIR SOURCE_DIR MODELS_DIR. Exit 77 (skipped): not root, or
# no apt-get.
set -euo pipefail
build=$(cd "$1" && pwd) source=$(cd "$2" && pwd) models=$(cd "$3" && pwd)
version=$(sed -n 's/^CMAKE_PROJECT_VERSION:STATIC=//p' "$build/CMakeCache.txt")
work=$(mktemp -d)
up=""
cleanup() {
  if [ -n "$up" ]; then kill "$up" 2>/dev/null || true; wait "$up" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
fail() { echo "FAILED: $*" >&2; exit 1; }
step() { echo "== $*"; }

prefix=$work/prefix
step "cmake --install --prefix $prefix"
cmake --install "$build" --prefix "$prefix" >/dev/null
[ -x "$prefix/bin/baton" ] || fail "no bin/baton"
[ ! -e "$prefix/etc" ] || fail "a prefix install wrote etc/ (only the .deb has /etc/baton)"
"$prefix/bin/baton" --version >"$work/version.txt"
grep -qx "baton $version" "$work/version.txt" || fail "baton --version: $(cat "$work/version.txt")"
grep -qE '^wire version [0-9]+ \(between nodes\), native client protocol [0-9]+$' "$work/version.txt" ||
  fail "baton --version names no wire version: $(cat "$work/version.txt")"
grep -q '^engine: baton-cpu-engine .* kernel=' "$work/version.txt" ||
  fail "baton --version names no engine fingerprint: $(cat "$work/version.txt")"

step "each public header compiles on its own (-Wall -Wextra, no Baton include path but its own)"
headers=$(cd "$prefix/include/baton" && find . -name '*.hpp' | sed 's|^\./||' | sort)
[ -n "$headers" ] || fail "no headers installed"
for header in $headers; do
  echo "#include <$header>" |
    c++ -std=c++20 -fsyntax-only -Wall -Wextra -Werror -I"$prefix/include/baton" -x c++ - ||
    fail "$header does not compile on its own"
done
if grep -rlE '#include [<"](capnp|kj|caf)/' "$prefix/include/baton"; then fail "a public header includes Cap'n Proto or CAF"; fi

step "examples/ against the installed CMake package (find_package(Baton), Baton::client)"
cmake -S "$source/examples" -B "$work/examples" -DCMAKE_PREFIX_PATH="$prefix" \
  -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/examples" >/dev/null
example=$work/examples/stream_generation

step "the example against pkg-config (baton-client.pc)"
pc_dir=$(dirname "$(find "$prefix" -name baton-client.pc)")
# shellcheck disable=SC2046  # pkg-config's flags are words
c++ -std=c++20 -Wall -Wextra -Werror "$source/examples/stream_generation.cpp" -o "$work/example_pc" \
  $(PKG_CONFIG_PATH=$pc_dir pkg-config --cflags --libs baton-client) \
  -Wl,-rpath,"$(PKG_CONFIG_PATH=$pc_dir pkg-config --variable=libdir baton-client)"

step "the version macros (client/version.hpp) and the library's version are the package's"
cat >"$work/version.cpp" <<'CPP'
#include <client/version.hpp>
#include <cstdio>
int main() { std::printf("%s %s\n", BATON_VERSION_STRING, baton::client::library_version()); }
CPP
# shellcheck disable=SC2046  # pkg-config's flags are words
c++ -std=c++20 -Wall -Wextra -Werror "$work/version.cpp" -o "$work/version" \
  $(PKG_CONFIG_PATH=$pc_dir pkg-config --cflags --libs baton-client) \
  -Wl,-rpath,"$(PKG_CONFIG_PATH=$pc_dir pkg-config --variable=libdir baton-client)"
[ "$("$work/version")" = "$version $version" ] || fail "versions: $("$work/version")"

step "the installed baton runs cluster.toml; the example streams through its router"
"$prefix/bin/baton" generate --model "$models/stories260K.bin" --tokenizer "$models/tok512.bin" \
  --temperature 0 --steps 100 "Once upon a time" >"$work/single.txt"
(cd "$source" && BATON_MODEL_PATH=$models exec "$prefix/bin/baton" up cluster.toml) \
  >"$work/up.log" 2>&1 &
up=$!
for _ in $(seq 300); do grep -q '^ready: ' "$work/up.log" && break; sleep 0.1; done
grep -q '^ready: ' "$work/up.log" || { cat "$work/up.log"; fail "the cluster did not become ready"; }
router=$(sed -n 's/^ready: router native=\([^ ]*\).*/\1/p' "$work/up.log" | head -1)
"$example" "Once upon a time" "$router" >"$work/cmake.txt"
"$work/example_pc" "Once upon a time" "$router" >"$work/pc.txt"
"${example}_static" "Once upon a time" "$router" >"$work/static.txt"
cmp "$work/single.txt" "$work/cmake.txt" || fail "the example's text differs from the engine's"
cmp "$work/single.txt" "$work/static.txt" || fail "the static build's text differs"
cmp "$work/single.txt" "$work/pc.txt" || fail "the pkg-config build's text differs"
# Its default routers are cluster.toml's two: the pool places on whichever are up.
"$work/examples/concurrent_generations" 8 "Once upon a time" >"$work/concurrent.txt" ||
  fail "concurrent_generations: a request failed or differed"
cmp "$work/single.txt" "$work/concurrent.txt" || fail "the concurrent example's text differs"
kill "$up"
wait "$up" || true
up=""

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
  echo "skipped: installing the .deb needs root and apt-get"
  exit 77
fi
step "cpack: the .deb packages"
(cd "$work" && cpack --config "$build/CPackConfig.cmake" -B "$work/deb" >/dev/null)
runtime_deb=$(ls "$work"/deb/baton_"$version"_*.deb)
dev_deb=$(ls "$work"/deb/baton-dev_"$version"_*.deb)
dpkg-deb -f "$runtime_deb" Depends | grep -q libfabric || fail "baton does not depend on libfabric"
dpkg-deb -f "$runtime_deb" Depends | grep -q libcaf || fail "baton does not depend on libcaf"

step "apt-get install ./baton_*.deb ./baton-dev_*.deb"
if dpkg -s baton >/dev/null 2>&1; then fail "a baton package is installed already"; fi
apt-get install -y -q "$runtime_deb" "$dev_deb" >"$work/apt.log" 2>&1 ||
  { cat "$work/apt.log"; fail "apt-get install"; }
remove() { apt-get purge -y -q baton baton-dev >"$work/purge.log" 2>&1; }
trap 'remove || true; cleanup' EXIT
[ "$(command -v baton)" = /usr/bin/baton ] || fail "baton is not /usr/bin/baton"
baton --version | grep -qx "baton $version" || fail "baton --version from the package"
BATON_MODEL_PATH=$models baton check /etc/baton/cluster.toml || fail "baton check /etc/baton/cluster.toml"
[ -f /lib/systemd/system/baton-node@.service ] || fail "no systemd unit"
grep -q '^ExecStart=/usr/bin/baton node' /lib/systemd/system/baton-node@.service ||
  fail "the unit does not run /usr/bin/baton"
cmake -S "$source/examples" -B "$work/examples-usr" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$work/examples-usr" >/dev/null || fail "the example against the installed baton-dev"

step "apt-get purge baton baton-dev"
remove || { cat "$work/purge.log"; fail "apt-get purge"; }
trap cleanup EXIT
for path in /usr/bin/baton /etc/baton /lib/systemd/system/baton-node@.service \
  /usr/include/baton /usr/lib/cmake/Baton; do
  [ ! -e "$path" ] || fail "$path is left behind"
done
if ls /usr/lib/libbaton_client* >/dev/null 2>&1; then fail "the client library is left behind"; fi
echo "package test passed"
