#pragma once

// Baton's benchmarks: programs that print figures (and JSON), each measuring its
// reference in the same run (docs/benchmarks.md). They run as `baton bench NAME`.

#include <CLI/CLI.hpp>

namespace baton::bench {

/// Adds `bench` and every benchmark under it to `app`. When one runs, it stores the
/// process exit code in `exit_code`, which must outlive `app`.
void add_bench_commands(CLI::App& app, int& exit_code);

}  // namespace baton::bench
