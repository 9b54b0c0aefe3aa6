#pragma once

#include <CLI/CLI.hpp>

/// The `baton` command's subcommands. Each add_*_command registers one subcommand on
/// `app`; when it runs, its callback stores the process exit code in `exit_code`, which
/// must outlive `app`. Figures go to stdout; diagnostics to stderr.
namespace baton::tools {

/// The `bench` subcommand that every benchmark attaches to, created on first use.
[[nodiscard]] CLI::App& bench_command(CLI::App& app);

void add_bench_actors_command(CLI::App& app, int& exit_code);
void add_check_command(CLI::App& app, int& exit_code);
void add_node_command(CLI::App& app, int& exit_code);
void add_status_command(CLI::App& app, int& exit_code);
void add_up_command(CLI::App& app, int& exit_code);
void add_selfcheck_command(CLI::App& app, int& exit_code);
void add_model_command(CLI::App& app, int& exit_code);
void add_generate_command(CLI::App& app, int& exit_code);
/// Adds `bench engine`, creating the `bench` subcommand if no one has yet.
void add_bench_engine_command(CLI::App& app, int& exit_code);
void add_bench_disagg_command(CLI::App& app, int& exit_code);
/// Adds `bench router`: the router's added latency against emulated zero-compute workers.
void add_bench_router_command(CLI::App& app, int& exit_code);
/// Adds `bench transport`, creating the `bench` subcommand if no one has yet.
void add_bench_transport_command(CLI::App& app, int& exit_code);
/// Adds `bench serve`: an open-loop benchmark of any OpenAI-compatible endpoint.
void add_bench_serve_command(CLI::App& app, int& exit_code);

}  // namespace baton::tools
