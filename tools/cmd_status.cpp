// `baton status [--config cluster.toml | --node ADDR]`: the membership table as a node
// sees it. `kind` (the hardware a node stands for) and `device` (the engine that really
// runs) are always printed together, so a CPU or emulated node is never mistaken for
// real hardware.
#include <chrono>
#include <string>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "runtime/admin_server.hpp"
#include "runtime/topology.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

struct status_args {
  std::string config = "cluster.toml";
  std::string node;  // an admin address
};

/// The first admin port that answers /status: `--node`, or each node of the topology.
expected<std::string> fetch_status(const status_args& args) {
  using namespace std::chrono_literals;
  if (!args.node.empty()) return runtime::admin_get(args.node, "/status", 2s);
  auto topology = runtime::load_topology(args.config);
  if (!topology) return tl::unexpected(topology.error());
  error last{errc::not_found, "the topology has no nodes"};
  for (const auto& n : topology->nodes) {
    auto body = runtime::admin_get(n.admin_address, "/status", 1s);
    if (body) return body;
    last = body.error();
  }
  return fail(last, "no node of the topology answered; last: ");
}

int run_status(const status_args& args) {
  auto body = fetch_status(args);
  if (!body) {
    fmt::print(stderr, "baton status: {}\n", body.error().message);
    return 1;
  }
  const auto status = nlohmann::json::parse(*body, nullptr, false);
  if (status.is_discarded() || !status.contains("members")) {
    fmt::print(stderr, "baton status: the node answered something that is not a status\n");
    return 1;
  }
  fmt::print("as seen by {}\n", status.value("node", "?"));
  fmt::print("{:<12} {:<12} {:<18} {:<16} {:<8} {:>18}  {}\n", "node", "kind", "device", "roles",
             "state", "incarnation", "fabric");
  for (const auto& m : status["members"]) {
    std::string roles;
    for (const auto& r : m.value("roles", nlohmann::json::array())) {
      roles += fmt::format("{}{}", roles.empty() ? "" : ",", r.get<std::string>());
    }
    fmt::print("{:<12} {:<12} {:<18} {:<16} {:<8} {:>18}  {}\n", m.value("node", "?"),
               m.value("kind", "?"), m.value("device", "?"), roles, m.value("state", "?"),
               m.value("incarnation", std::uint64_t{0}), m.value("fabric", "?"));
  }
  return 0;
}

}  // namespace

void add_status_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("status", "Print the cluster's membership table");
  static status_args args;
  cmd->add_option("--config", args.config, "Topology file (asks its nodes in turn)")
      ->capture_default_str();
  cmd->add_option("--node", args.node, "Admin address of the node to ask (host:port)");
  cmd->callback([&exit_code] { exit_code = run_status(args); });
}

}  // namespace baton::tools
