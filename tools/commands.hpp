#pragma once

#include <CLI/CLI.hpp>

/// The `baton` command's subcommands (benchmarks: bench/bench.hpp). Each add_*_command
/// registers one subcommand on `app`; when it runs, its callback stores the process exit
/// code in `exit_code`, which must outlive `app`. Figures go to stdout; diagnostics to
/// stderr.
namespace baton::tools {

void add_check_command(CLI::App& app, int& exit_code);
void add_node_command(CLI::App& app, int& exit_code);
void add_status_command(CLI::App& app, int& exit_code);
void add_drain_command(CLI::App& app, int& exit_code);
void add_up_command(CLI::App& app, int& exit_code);
void add_selfcheck_command(CLI::App& app, int& exit_code);
void add_model_command(CLI::App& app, int& exit_code);
void add_generate_command(CLI::App& app, int& exit_code);
/// `baton secret init FILE`: a fresh cluster secret.
void add_secret_command(CLI::App& app, int& exit_code);
/// `baton sim`: the fleet simulator (sim/simulator.hpp); `baton sim gen`: a fleet file.
void add_sim_command(CLI::App& app, int& exit_code);
/// `baton chaos`: kills nodes and actors of a local cluster during traffic and checks that
/// every request completed once and identically (tools/cmd_chaos.cpp).
void add_chaos_command(CLI::App& app, int& exit_code);

}  // namespace baton::tools
