// `baton check [cluster.toml]`: validates a topology and prints the plan: every node with
// the hardware it stands for, the engine that actually runs, its roles, an estimate of its
// memory and every address it listens on (fabric, admin, native, http), then the
// topology's warnings. Offline: it reads the topology and the model on this host only.
#include <algorithm>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "base/address.hpp"
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

/// Rows of cells printed as columns, each as wide as its widest cell; the last `right`
/// columns (figures) right-aligned, the others left-aligned.
void print_table(const std::vector<std::vector<std::string>>& rows, std::size_t right = 0) {
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    widths.resize(std::max(widths.size(), row.size()));
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      const bool last = i + 1 == row.size();
      if (i + right >= row.size()) {
        line += fmt::format("{:>{}}{}", row[i], widths[i], last ? "" : "  ");
      } else {
        line += last ? row[i] : fmt::format("{:<{}}  ", row[i], widths[i]);
      }
    }
    fmt::print("{}\n", line);
  }
}

/// Port 0: the node binds any free port and reports it.
bool any_port(const std::string& address) {
  auto parsed = parse_host_port(address, port_zero::allowed);
  return parsed && parsed->port == 0;
}

/// The model's files, checked on this host; the error names what is missing and where.
expected<engine::model> check_model(const std::string& path, const runtime::topology& topo) {
  const auto& m = topo.model;
  if (const auto missing = m.missing(); !missing.empty()) {
    const bool named = m.checkpoint_named || m.tokenizer_named;
    return fail(errc::not_found,
                fmt::format("{}: [model]: {}{}", path, missing,
                            named ? "\nbaton check: " + runtime::model_path_hint() : ""));
  }
  auto model = engine::model::load(m.checkpoint.string());
  if (!model) return fail(model.error(), fmt::format("{}: [model] checkpoint: ", path));
  return model;
}

/// Emulated devices must resolve against the checkpoint; the error names the node.
expected<void> check_devices(const std::string& path, const runtime::topology& topo,
                             const engine::model& model) {
  for (const auto& node : topo.nodes) {
    if (!node.emulated()) continue;
    const auto device = launcher::device_options_for(topo, node);
    auto setup = engine::resolve_emulated(device.device, device.shape, model.config(),
                                          device.checkpoint, device.emulated);
    if (setup) {
      auto layout = engine::emulated_kv_layout(setup->shape, setup->options);
      if (!layout) setup = tl::unexpected(layout.error());
    }
    if (!setup) {
      return fail(setup.error(), fmt::format("{}:{}: node {}: device \"{}\": ", path, node.line,
                                             node.name, node.device));
    }
  }
  return {};
}

void print_plan(const runtime::topology& topo, const engine::model& model) {
  const auto& shape = model.config();
  fmt::print("cluster {}: {} nodes, provider {}, seeds {}\n", topo.cluster_name, topo.nodes.size(),
             topo.provider, fmt::join(topo.seeds, ","));
  fmt::print("model {}: {} ({} parameters); tokenizer {}\n", topo.model.checkpoint.string(),
             shape.describe(), shape.parameter_count(), topo.model.tokenizer.string());
  if (topo.model.checkpoint_named || topo.model.tokenizer_named) {
    fmt::print(
        "  found by name in this host's model search path: each node looks the names up "
        "where it runs, so every host needs the same files there (BATON_MODEL_PATH in the "
        "environment of every `baton node`, or ./models, ../shared/models)\n");
  }
  std::vector<std::vector<std::string>> plan = {
      {"node", "kind", "device", "roles", "kv blocks", "memory (est.)"}};
  std::vector<std::vector<std::string>> addresses = {{"node", "fabric", "admin", "native", "http"}};
  std::uint64_t total = 0;
  bool port_zero = false;
  const auto shown = [](const std::string& a) { return a.empty() ? std::string("-") : a; };
  for (const auto& node : topo.nodes) {
    const auto bytes = estimate_bytes(node, shape, topo.limits.kv_block_tokens);
    total += bytes;
    plan.push_back({node.name, std::string(runtime::to_string(node.kind)), node.device,
                    roles_text(node), std::to_string(node.kv_blocks), mib(bytes)});
    addresses.push_back({node.name, node.fabric_address, node.admin_address,
                         shown(node.native_address), shown(node.http_address)});
    for (const auto* a : {&node.admin_address, &node.native_address, &node.http_address}) {
      port_zero = port_zero || any_port(*a);
    }
    port_zero = port_zero || (topo.provider != "shm" && any_port(node.fabric_address));
  }
  print_table(plan, 2);
  fmt::print(
      "total memory (est.) {}; `kind` is the hardware a node stands for, `device` the "
      "engine that runs (cpu = this CPU, emulated:* = modelled timings)\n\n",
      mib(total));
  print_table(addresses);
  fmt::print(
      "native: the router's client port (baton generate --router); http: its "
      "OpenAI-compatible API; -: none\n");
  if (port_zero) {
    fmt::print(
        "port 0: any free port, reported at start on the node's line "
        "`node NAME listening fabric=... admin=... [native=...] [http=...]`\n");
  }
}

int run_check(const std::string& path) {
  auto topo = runtime::load_topology(path);
  if (!topo) {
    fmt::print(stderr, "baton check: {}\n", topo.error().message);
    return 1;
  }
  auto model = check_model(path, *topo);
  if (!model) {
    fmt::print(stderr, "baton check: {}\n", model.error().message);
    return 1;
  }
  if (auto ok = check_devices(path, *topo, *model); !ok) {
    fmt::print(stderr, "baton check: {}\n", ok.error().message);
    return 1;
  }
  print_plan(*topo, *model);
  for (const auto& warning : topo->warnings()) {
    fmt::print(stderr, "baton check: warning: {}\n", warning);
  }
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
