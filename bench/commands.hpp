#pragma once

// Internal to bench/: each benchmark registers itself under `baton bench`.

#include <CLI/CLI.hpp>

namespace baton::bench {

/// The `bench` subcommand that every benchmark attaches to, created on first use.
[[nodiscard]] CLI::App& bench_command(CLI::App& app);

void add_bench_actors_command(CLI::App& app, int& exit_code);
void add_bench_engine_command(CLI::App& app, int& exit_code);
void add_bench_disagg_command(CLI::App& app, int& exit_code);
/// `bench router`: the router's added latency against emulated zero-compute workers.
void add_bench_router_command(CLI::App& app, int& exit_code);
void add_bench_transport_command(CLI::App& app, int& exit_code);
/// `bench serve`: an open-loop benchmark of any OpenAI-compatible endpoint.
void add_bench_serve_command(CLI::App& app, int& exit_code);

}  // namespace baton::bench
