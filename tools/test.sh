#!/usr/bin/env bash
# The whole test suite, from a fresh Debian 12 machine: installs what it needs, checks
# formatting, builds Release and runs every test label, builds ASan+UBSan and runs the
# unit, component, conformance, simulation and fuzz-regression labels, builds TSan and
# runs the unit, component, conformance and simulation labels, then runs each libFuzzer
# target for a while. The sanitizer builds build only what their labels run
# (CMakePresets.json). Prints the time of each stage. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."

fuzz_seconds=${BATON_FUZZ_SECONDS:-20}
logs=build/test-logs
declare -a stage_names=() stage_seconds=()
passed=0
failed=0

stage() {  # stage NAME COMMAND...: runs and times one stage
  local name=$1 start=$SECONDS
  shift
  echo "== ${name}"
  "$@"
  stage_names+=("$name")
  stage_seconds+=($((SECONDS - start)))
  echo "== ${name}: $((SECONDS - start)) s"
}

format_check() {
  git ls-files '*.cpp' '*.hpp' | xargs clang-format --dry-run --Werror
}

run_ctest() {  # run_ctest PRESET: runs ctest and adds its counts to the totals
  local log="${logs}/ctest-$1.log" status=0
  ctest --preset "$1" -j2 2>&1 | tee "$log" || status=$?
  local line total bad
  line=$(grep -E '^[0-9]+% tests passed' "$log" | tail -1)
  total=$(sed -E 's/.* out of ([0-9]+).*/\1/' <<<"$line")
  bad=$(sed -E 's/.* ([0-9]+) tests failed.*/\1/' <<<"$line")
  passed=$((passed + total - bad))
  failed=$((failed + bad))
  return $status
}

build() {  # build PRESET
  cmake --preset "$1" >"${logs}/configure-$1.log"
  cmake --build --preset "$1"
}

fuzz() {
  cmake --preset fuzz >"${logs}/configure-fuzz.log"
  cmake --build --preset fuzz --target fuzz_targets
  for target in build/fuzz/tests/fuzz/*_fuzz; do
    local name corpus work
    name=$(basename "$target")
    corpus="tests/fuzz/corpus/${name%_fuzz}"
    work=$(mktemp -d)
    cp "$corpus"/* "$work"/
    # New crashes land in build/fuzz/artifacts; commit them to the corpus as regressions.
    mkdir -p build/fuzz/artifacts
    "$target" -max_total_time="$fuzz_seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix=build/fuzz/artifacts/ "$work" 2>"${logs}/${name}.log" ||
      { tail -40 "${logs}/${name}.log"; rm -rf "$work"; return 1; }
    grep -E 'stat::number_of_executed_units|Done' "${logs}/${name}.log" | tail -2
    rm -rf "$work"
  done
}

mkdir -p "$logs"
stage "set-up (apt)" tools/setup.sh
stage "format check" format_check
stage "release build" build release
stage "release tests (all labels)" run_ctest release
stage "asan build" build asan
stage "asan tests (unit, component, conformance, simulation, fuzz-regression)" run_ctest asan
stage "tsan build" build tsan
stage "tsan tests (unit, component, conformance, simulation)" run_ctest tsan
stage "fuzz (${fuzz_seconds} s per target)" fuzz

echo
echo "== stage times"
total=0
for i in "${!stage_names[@]}"; do
  printf '  %-72s %5d s\n' "${stage_names[$i]}" "${stage_seconds[$i]}"
  total=$((total + stage_seconds[i]))
done
printf '  %-72s %5d s\n' "total" "$total"
echo "tests: ${passed} passed, ${failed} failed"
