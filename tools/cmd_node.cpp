// `baton node --config cluster.toml --name NAME [--join SEED]`: runs one node of the
// topology: its runtime (membership, bridges, fabric) and its admin port. SIGINT or
// SIGTERM makes it leave the cluster cleanly (a second one stops it at once).
#include <pthread.h>
#include <csignal>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "runtime/admin_server.hpp"
#include "runtime/membership.hpp"
#include "runtime/node.hpp"
#include "tools/commands.hpp"
#include "tools/node_identity.hpp"

namespace baton::tools {
namespace {

struct node_args {
  std::string config = "cluster.toml";
  std::string name;
  std::vector<std::string> join;
  std::uint64_t seed = 0;
};

nlohmann::json status_json(runtime::node& n) {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : n.members()) {
    nlohmann::json roles = nlohmann::json::array();
    for (auto r : m.roles) roles.push_back(runtime::to_string(r));
    members.push_back({{"node", m.node},
                       {"kind", runtime::to_string(m.kind)},
                       {"device", m.device},
                       {"roles", roles},
                       {"state", runtime::to_string(m.state)},
                       {"incarnation", m.incarnation},
                       {"fabric", m.fabric_address},
                       {"admin", m.admin_address}});
  }
  return {
      {"node", n.spec().name}, {"incarnation", n.context().incarnation()}, {"members", members}};
}

/// Waits for SIGINT/SIGTERM (blocked in every thread) and turns them into leave / stop.
std::thread signal_thread(runtime::node& n, sigset_t set) {
  return std::thread([&n, set] {
    int leaves = 0;
    for (;;) {
      int sig = 0;
      if (sigwait(&set, &sig) != 0 || sig == SIGUSR1) return;
      if (leaves++ == 0) {
        spdlog::info("signal {}: leaving the cluster", sig);
        n.leave();
      } else {
        n.stop("stopped by a second signal");
      }
    }
  });
}

int run_node(const node_args& args) {
  spdlog::flush_on(spdlog::level::info);  // logs go to files and pipes: no buffering
  // Block the signals before any thread starts, so only the signal thread sees them.
  sigset_t set;
  sigemptyset(&set);
  for (int sig : {SIGINT, SIGTERM, SIGUSR1}) sigaddset(&set, sig);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);

  auto topology = runtime::load_topology(args.config);
  if (!topology) {
    spdlog::error("{}", topology.error().message);
    return 2;
  }
  auto identity = node_identity(*topology);
  if (!identity) {
    spdlog::error("{}", identity.error().message);
    return 2;
  }
  const auto seed = args.seed != 0 ? args.seed : std::random_device{}();
  runtime::node_options options;
  options.topology = *topology;
  options.name = args.name;
  options.join = args.join;
  options.identity = *identity;
  options.random_seed = seed;
  auto n = runtime::node::start(std::move(options));
  if (!n) {
    spdlog::error("{}", n.error().message);
    return 2;
  }
  auto& node = **n;
  auto admin = runtime::admin_server::start(
      node.spec().admin_address,
      {[&node] { return true; }, [&node] { return node.metrics().prometheus_text(); },
       [&node] { return status_json(node); }});
  if (!admin) {
    spdlog::error("node {}: {}", args.name, admin.error().message);
    return 2;
  }
  spdlog::info("node {} serving: fabric {} ({}), admin {}", args.name, node.spec().fabric_address,
               topology->provider, node.spec().admin_address);
  auto signals = signal_thread(node, set);
  const auto reason = node.wait();
  pthread_kill(signals.native_handle(), SIGUSR1);
  signals.join();
  const bool clean = reason == "left the cluster";
  if (clean) {
    spdlog::info("node {} stopped: {}", args.name, reason);
  } else {
    spdlog::error("node {} stopped: {}", args.name, reason);
  }
  return clean ? 0 : 1;
}

}  // namespace

void add_node_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("node", "Run one node of a topology");
  static node_args args;
  cmd->add_option("--config", args.config, "Topology file")->capture_default_str();
  cmd->add_option("--name", args.name, "This node's name in the topology")->required();
  cmd->add_option("--join", args.join, "Seed to join through (node name or fabric address)");
  cmd->add_option("--seed", args.seed, "Random seed for probe order (0: random, logged)");
  cmd->callback([&exit_code] { exit_code = run_node(args); });
}

}  // namespace baton::tools
