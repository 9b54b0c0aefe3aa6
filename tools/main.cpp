// The `baton` command: one executable, one subcommand per job (node, up, generate,
// status, bench, ...). See README.md.
#include <string>

#include <fmt/format.h>
#include <CLI/CLI.hpp>

#include "bench/bench.hpp"
#include "client/version.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/emulated_engine.hpp"
#include "schemas/client.hpp"
#include "schemas/types.hpp"
#include "tools/commands.hpp"

namespace {

/// `baton --version`: what decides whether this build works with others. Nodes join only
/// with the same wire version and numerics fingerprint; clients and routers follow
/// docs/wire-format.md's compatibility rules.
std::string version_text() {
  namespace engine = baton::engine;
  return fmt::format(
      "baton {}\nwire version {} (between nodes), native client protocol {}\n"
      "engine: {} (this CPU's best kernel), {}",
      BATON_VERSION_STRING, baton::wire::wire_version, baton::wire::client_protocol_version,
      engine::numerics_fingerprint(engine::best_kernel_path()), engine::emulated_engine_version);
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"Baton: a runtime for disaggregated LLM inference"};
  app.require_subcommand(1);
  app.set_version_flag("--version", version_text);
  int exit_code = 0;
  baton::tools::add_check_command(app, exit_code);
  baton::tools::add_node_command(app, exit_code);
  baton::tools::add_status_command(app, exit_code);
  baton::tools::add_drain_command(app, exit_code);
  baton::tools::add_up_command(app, exit_code);
  baton::tools::add_selfcheck_command(app, exit_code);
  baton::tools::add_model_command(app, exit_code);
  baton::tools::add_generate_command(app, exit_code);
  baton::tools::add_secret_command(app, exit_code);
  baton::tools::add_sim_command(app, exit_code);
  baton::tools::add_chaos_command(app, exit_code);
  baton::bench::add_bench_commands(app, exit_code);
  CLI11_PARSE(app, argc, argv);
  return exit_code;
}
