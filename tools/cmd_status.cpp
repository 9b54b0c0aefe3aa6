// `baton status [--config cluster.toml | --node ADDR]`: the membership table as a node
// sees it. `kind` (the hardware a node stands for) and `device` (the engine that really
// runs) are always printed together, so a CPU or emulated node is never mistaken for
// real hardware.
// `baton drain NODE [--config cluster.toml | --via ADDR] [--deadline-s S]`: asks NODE to
// take no new work, finish what it holds (moving what is left at the deadline to other
// nodes) and leave; waits until it has left.
#include <chrono>
#include <string>
#include <thread>

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
  fmt::print("{:<12} {:<12} {:<18} {:<16} {:<16} {:>8} {:>18}  {}\n", "node", "kind", "device",
             "roles", "state", "restarts", "incarnation", "fabric");
  for (const auto& m : status["members"]) {
    std::string roles;
    for (const auto& r : m.value("roles", nlohmann::json::array())) {
      roles += fmt::format("{}{}", roles.empty() ? "" : ",", r.get<std::string>());
    }
    const auto state =
        m.value("state", std::string("?")) + (m.value("draining", false) ? ",draining" : "");
    fmt::print("{:<12} {:<12} {:<18} {:<16} {:<16} {:>8} {:>18}  {}\n", m.value("node", "?"),
               m.value("kind", "?"), m.value("device", "?"), roles, state, m.value("restarts", 0u),
               m.value("incarnation", std::uint64_t{0}), m.value("fabric", "?"));
  }
  return 0;
}

struct drain_args {
  std::string node;
  std::string config = "cluster.toml";
  std::string via;  // an admin address to look the node up through
  double deadline_s = 30;
};

/// NODE's admin address: from the membership table of `--via` or of the topology's nodes,
/// else the topology's own entry for it.
expected<std::string> admin_of(const drain_args& args) {
  const auto status = fetch_status({args.config, args.via});
  if (status) {
    const auto table = nlohmann::json::parse(*status, nullptr, false);
    if (!table.is_discarded() && table.contains("members")) {
      for (const auto& m : table["members"]) {
        if (m.value("node", "") == args.node && m.value("state", "") != "dead") {
          return m.value("admin", std::string());
        }
      }
    }
  }
  if (args.via.empty()) {
    auto topology = runtime::load_topology(args.config);
    if (!topology) return tl::unexpected(topology.error());
    if (const auto* n = topology->find(args.node)) return n->admin_address;
  }
  return fail(errc::not_found, fmt::format("no live node named {} in the cluster", args.node));
}

int run_drain(const drain_args& args) {
  using namespace std::chrono_literals;
  if (!(args.deadline_s >= 0 && args.deadline_s <= 3600)) {
    fmt::print(stderr, "baton drain: --deadline-s must be between 0 and 3600\n");
    return 2;
  }
  auto admin = admin_of(args);
  if (!admin) {
    fmt::print(stderr, "baton drain: {}\n", admin.error().message);
    return 1;
  }
  const auto deadline_ms = static_cast<long>(args.deadline_s * 1000);
  auto answer = runtime::admin_post(*admin, fmt::format("/drain?deadline_ms={}", deadline_ms), 5s);
  if (!answer) {
    fmt::print(stderr, "baton drain: {} ({}): {}\n", args.node, *admin, answer.error().message);
    return 1;
  }
  fmt::print("{} draining: {}", args.node, *answer);
  // Until its admin port stops answering: it left and exited.
  const auto until =
      std::chrono::steady_clock::now() + std::chrono::milliseconds(deadline_ms) + 30s;
  long last_work = -1;
  while (std::chrono::steady_clock::now() < until) {
    auto body = runtime::admin_get(*admin, "/status", 1s);
    if (!body) {
      fmt::print("{} drained and left\n", args.node);
      return 0;
    }
    const auto s = nlohmann::json::parse(*body, nullptr, false);
    const long work = s.is_discarded() ? -1 : s.value("work", -1L);
    if (work != last_work) fmt::print("{} holds {} requests\n", args.node, work);
    last_work = work;
    std::this_thread::sleep_for(200ms);
  }
  fmt::print(stderr, "baton drain: {} still answers {} s after its deadline\n", args.node, 30);
  return 1;
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

void add_drain_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand(
      "drain", "Take a node out of service: no new work, finish what it holds, leave");
  static drain_args args;
  cmd->add_option("node", args.node, "Name of the node to drain")->required();
  cmd->add_option("--config", args.config, "Topology file (finds the node through its nodes)")
      ->capture_default_str();
  cmd->add_option("--via", args.via, "Admin address of any node of the cluster (host:port)");
  cmd->add_option("--deadline-s", args.deadline_s,
                  "Seconds to let held requests finish before moving them to other nodes")
      ->capture_default_str();
  cmd->callback([&exit_code] { exit_code = run_drain(args); });
}

}  // namespace baton::tools
