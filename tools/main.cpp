// The `baton` command: one executable, one subcommand per job (node, up, generate,
// status, bench, ...). See README.md.
#include <CLI/CLI.hpp>

#include "bench/bench.hpp"
#include "tools/commands.hpp"

int main(int argc, char** argv) {
  CLI::App app{"Baton: a runtime for disaggregated LLM inference"};
  app.require_subcommand(1);
  app.set_version_flag("--version", "baton " BATON_VERSION);
  int exit_code = 0;
  baton::tools::add_check_command(app, exit_code);
  baton::tools::add_node_command(app, exit_code);
  baton::tools::add_status_command(app, exit_code);
  baton::tools::add_drain_command(app, exit_code);
  baton::tools::add_up_command(app, exit_code);
  baton::tools::add_selfcheck_command(app, exit_code);
  baton::tools::add_model_command(app, exit_code);
  baton::tools::add_generate_command(app, exit_code);
  baton::bench::add_bench_commands(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
