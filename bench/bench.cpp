#include "bench/bench.hpp"

#include "bench/commands.hpp"

namespace baton::bench {

CLI::App& bench_command(CLI::App& app) {
  const auto found = app.get_subcommands([](CLI::App* sub) { return sub->get_name() == "bench"; });
  if (!found.empty()) return *found.front();
  auto* bench = app.add_subcommand("bench", "Benchmarks that print figures (and JSON)");
  bench->require_subcommand(1);
  return *bench;
}

void add_bench_commands(CLI::App& app, int& exit_code) {
  add_bench_actors_command(app, exit_code);
  add_bench_engine_command(app, exit_code);
  add_bench_disagg_command(app, exit_code);
  add_bench_router_command(app, exit_code);
  add_bench_client_command(app, exit_code);
  add_bench_tls_command(app, exit_code);
  add_bench_transport_command(app, exit_code);
  add_bench_serve_command(app, exit_code);
}

}  // namespace baton::bench
