// `baton check [cluster.toml]`: validates a topology and prints the plan: every node with
// the hardware it stands for, the engine that actually runs, its roles and addresses,
// and an estimate of its memory.
#include <numeric>
#include <string>

#include <fmt/format.h>

#include "engine/device.hpp"
#include "engine/model.hpp"
#include "launcher/node_identity.hpp"
#include "runtime/topology.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

std::string roles_text(const runtime::node_spec& node) {
  std::string out;
  for (auto r : node.roles)
    out += fmt::format("{}{}", out.empty() ? "" : ",", runtime::to_string(r));
  return out;
}

std::string mib(std::uint64_t bytes) {
  return fmt::format("{:.1f} MiB", static_cast<double>(bytes) / (1 << 20));
}

/// Weights where the node computes (prefill, decode), its KV pool, and a fixed allowance
/// for the runtime (actor system, transport buffers, scratch).
std::uint64_t estimate_bytes(const runtime::node_spec& node, const engine::model_config& model,
                             std::uint32_t block_tokens) {
  constexpr std::uint64_t runtime_bytes = 64ULL << 20;
  const bool computes = node.has_role(wire::role::prefill) || node.has_role(wire::role::decode);
  const std::uint64_t kv_block_bytes = 2ULL * static_cast<std::uint64_t>(model.n_layers) *
                                       static_cast<std::uint64_t>(model.kv_dim()) * block_tokens *
                                       sizeof(float);
  return runtime_bytes + (computes ? model.file_bytes() : 0) + node.kv_blocks * kv_block_bytes;
}

int run_check(const std::string& path) {
  auto topo = runtime::load_topology(path);
  if (!topo) {
    fmt::print(stderr, "baton check: {}\n", topo.error().message);
    return 1;
  }
  if (const auto missing = topo->model.missing(); !missing.empty()) {
    fmt::print(stderr, "baton check: {}: [model]: {}\n", path, missing);
    return 1;
  }
  auto model = engine::model::load(topo->model.checkpoint.string());
  if (!model) {
    fmt::print(stderr, "baton check: {}: [model] checkpoint: {}\n", path, model.error().message);
    return 1;
  }
  for (const auto& node : topo->nodes) {
    if (!node.emulated()) continue;
    const auto device = launcher::device_options_for(*topo, node);
    auto setup = engine::resolve_emulated(device.device, device.shape, model->config(),
                                          device.checkpoint, device.emulated);
    if (setup) {
      auto layout = engine::emulated_kv_layout(setup->shape, setup->options);
      if (!layout) setup = tl::unexpected(layout.error());
    }
    if (!setup) {
      fmt::print(stderr, "baton check: {}:{}: node {}: device \"{}\": {}\n", path, node.line,
                 node.name, node.device, setup.error().message);
      return 1;
    }
  }
  const auto& shape = model->config();
  fmt::print("cluster {}: {} nodes, provider {}, seeds {}\n", topo->cluster_name,
             topo->nodes.size(), topo->provider, fmt::join(topo->seeds, ","));
  fmt::print("model {}: {} ({} parameters)\n", topo->model.checkpoint.string(), shape.describe(),
             shape.parameter_count());
  fmt::print("{:<12} {:<12} {:<18} {:<16} {:<18} {:<18} {:>9} {:>14}\n", "node", "kind", "device",
             "roles", "fabric", "admin", "kv blocks", "memory (est.)");
  std::uint64_t total = 0;
  for (const auto& node : topo->nodes) {
    const auto bytes = estimate_bytes(node, shape, topo->limits.kv_block_tokens);
    total += bytes;
    fmt::print("{:<12} {:<12} {:<18} {:<16} {:<18} {:<18} {:>9} {:>14}\n", node.name,
               runtime::to_string(node.kind), node.device, roles_text(node), node.fabric_address,
               node.admin_address, node.kv_blocks, mib(bytes));
  }
  fmt::print(
      "total memory (est.) {}; `kind` is the hardware a node stands for, `device` the "
      "engine that runs (cpu = this CPU, emulated:* = modelled timings)\n",
      mib(total));
  return 0;
}

}  // namespace

void add_check_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("check", "Validate a topology and print the plan");
  static std::string path = "cluster.toml";
  cmd->add_option("config", path, "Topology file")->capture_default_str();
  cmd->callback([&exit_code] { exit_code = run_check(path); });
}

}  // namespace baton::tools
