// `baton node --config cluster.toml --name NAME [--join SEED]`: runs one node of the
// topology: its runtime (membership, bridges, fabric) and its admin port. SIGINT or
// SIGTERM makes it leave the cluster cleanly (a second one stops it at once).
#include <pthread.h>
#include <csignal>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>

#include "actors/decode/decode_actor.hpp"
#include "actors/prefill/prefill_actor.hpp"
#include "actors/router/router_actor.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "frontend/http_server.hpp"
#include "frontend/native_server.hpp"
#include "launcher/node_identity.hpp"
#include "runtime/admin_server.hpp"
#include "runtime/membership.hpp"
#include "runtime/node.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

struct node_args {
  std::string config = "cluster.toml";
  std::string name;
  std::vector<std::string> join;
  std::uint64_t seed = 0;
  actors::prefill_faults faults;  ///< chaos tests only
  bool kv_after_compute = false;  ///< the serial baseline of `baton bench disagg`
  std::string checkpoint;         ///< overrides the topology's [model] (baton up's stand-in)
  std::string tokenizer;
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

/// What the node's serving actors compute with; loaded once, shared by its actors.
struct serving_model {
  engine::model model;
  engine::tokenizer tok;
};

expected<std::unique_ptr<serving_model>> load_serving_model(const runtime::topology& t) {
  auto m = engine::model::load(t.model.checkpoint.string());
  if (!m) return tl::unexpected(m.error());
  auto tok = engine::tokenizer::load(t.model.tokenizer.string(), m->config().vocab_size);
  if (!tok) return tl::unexpected(tok.error());
  return std::make_unique<serving_model>(serving_model{std::move(*m), std::move(*tok)});
}

/// The node's role actors, as the topology gives them, for the supervisor to start. A
/// router registers in `router` for the client servers.
std::vector<runtime::child_spec> role_actors(const runtime::topology& t,
                                             const runtime::node_spec& spec,
                                             const serving_model& sm, const node_args& args,
                                             std::shared_ptr<actors::router_entry> router) {
  std::vector<runtime::child_spec> out;
  const auto block_tokens = static_cast<std::size_t>(t.limits.kv_block_tokens);
  if (spec.has_role(wire::role::decode)) {
    actors::decode_options o;
    o.device = launcher::device_options_for(t, spec);
    o.device.engine.kv_blocks = spec.kv_blocks;
    o.device.engine.max_sequences = std::max<std::size_t>(64, 2 * spec.max_batch);
    o.config.max_batch = spec.max_batch;
    out.push_back({actors::decode_name, [&sm, o](runtime::node_context& ctx) {
                     return actors::spawn_decode(ctx, sm.model, o);
                   }});
  }
  if (spec.has_role(wire::role::prefill)) {
    actors::prefill_options o;
    o.device = launcher::device_options_for(t, spec);
    o.device.engine.kv_blocks = spec.kv_blocks;
    o.faults = args.faults;
    o.config.pipeline = !args.kv_after_compute;
    o.config.max_in_flight = o.device.engine.max_sequences;
    out.push_back({actors::prefill_name, [&sm, o](runtime::node_context& ctx) {
                     return actors::spawn_prefill(ctx, sm.model, o);
                   }});
  }
  if (spec.has_role(wire::role::router)) {
    actors::router_options o;
    o.config.max_inflight = t.limits.max_queued_requests;
    o.config.default_timeout = std::chrono::milliseconds(t.timeouts.request_ms);
    o.config.prefill_on_decode_max_tokens = t.router.prefill_on_decode_max_tokens;
    o.config.when_no_prefill = t.router.when_no_prefill == "fail"
                                   ? actors::no_prefill_policy::fail
                                   : actors::no_prefill_policy::prefill_on_decode;
    o.config.max_attempts = t.router.max_attempts;
    o.config.seed = std::random_device{}();
    o.seq_len = sm.model.config().seq_len;
    o.block_tokens = block_tokens;
    o.native_address = spec.native_address;
    o.entry = std::move(router);
    if (!spec.http_address.empty()) o.http_address = fmt::format("http://{}", spec.http_address);
    for (const auto& n : t.nodes) {
      if (n.has_role(wire::role::decode)) o.kv_blocks[n.name] = n.kv_blocks;
    }
    out.push_back({actors::router_name, [&sm, o](runtime::node_context& ctx) {
                     return actors::spawn_router(ctx, sm.tok, o);
                   }});
  }
  return out;
}

/// The serving metrics of every alive prefill and decode node (queue depths, KV pools,
/// transfers), read from their admin ports for the router's HTTP /metrics.
std::string worker_metrics(runtime::node& n) {
  std::vector<std::pair<std::string, std::string>> texts;
  for (const auto& m : n.members()) {
    if (m.state != wire::member_state::alive || m.node == n.spec().name) continue;
    auto text = runtime::admin_get(m.admin_address, "/metrics", std::chrono::milliseconds(300));
    if (text) texts.emplace_back(m.node, std::move(*text));
  }
  return runtime::merge_node_metrics(texts, {"baton_prefill_", "baton_decode_"});
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
  if (!args.checkpoint.empty())
    topology->model = {args.checkpoint, args.tokenizer, {}, false, false};
  if (const auto missing = topology->model.missing(); !missing.empty()) {
    spdlog::error("{}: {}", args.config, missing);
    return 2;
  }
  auto identity = launcher::node_identity(*topology);
  if (!identity) {
    spdlog::error("{}", identity.error().message);
    return 2;
  }
  const auto seed = args.seed != 0 ? args.seed : std::random_device{}();
  const auto* spec = topology->find(args.name);
  auto sm = load_serving_model(*topology);
  if (!sm) {
    spdlog::error("{}", sm.error().message);
    return 2;
  }
  runtime::node_options options;
  options.topology = *topology;
  options.name = args.name;
  options.join = args.join;
  options.identity = *identity;
  options.random_seed = seed;
  auto router = std::make_shared<actors::router_entry>();
  if (spec != nullptr) options.actors = role_actors(*topology, *spec, **sm, args, router);
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
  // A router's client port: requests go to the router through the gateway.
  actors::router_gateway gateway(router);
  std::unique_ptr<frontend::native_server> native;
  if (node.spec().has_role(wire::role::router) && !node.spec().native_address.empty()) {
    frontend::server_options so;
    so.address = node.spec().native_address;
    so.default_timeout_ms = topology->timeouts.request_ms;
    auto server = frontend::native_server::start(so, gateway);
    if (!server) {
      spdlog::error("node {}: native port: {}", args.name, server.error().message);
      return 2;
    }
    native = std::move(*server);
  }
  // The OpenAI-compatible HTTP API (docs/http-api.md), through the same gateway.
  std::unique_ptr<frontend::http_server> http;
  if (node.spec().has_role(wire::role::router) && !node.spec().http_address.empty()) {
    frontend::http_options ho;
    ho.address = node.spec().http_address;
    ho.model = topology->model.checkpoint.stem().string();
    ho.max_tokens_limit = topology->limits.max_new_tokens;
    ho.default_timeout_ms = topology->timeouts.request_ms;
    ho.metrics_text = [&node] { return node.metrics().prometheus_text() + worker_metrics(node); };
    ho.healthy = [&node] { return static_cast<bool>(node.context().lookup(actors::router_name)); };
    auto server = frontend::http_server::start(std::move(ho), gateway);
    if (!server) {
      spdlog::error("node {}: http port: {}", args.name, server.error().message);
      return 2;
    }
    http = std::move(*server);
  }
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
  // Faults injected on purpose, for chaos tests; never in production.
  cmd->add_option_function<std::uint64_t>(
      "--fault-corrupt-slice", [](std::uint64_t n) { args.faults.corrupt_slice = n; },
      "Chaos: the N-th KV slice this prefill node writes (from 0) carries wrong bytes");
  cmd->add_option_function<int>(
      "--fault-delay-writes-ms",
      [](int ms) { args.faults.delay_writes = std::chrono::milliseconds(ms); },
      "Chaos: post every KV slice write this much later");
  cmd->add_flag("--kv-after-compute", args.kv_after_compute,
                "Ship a prompt's KV only once it is fully computed (the serial baseline)");
  auto* checkpoint = cmd->add_option("--checkpoint", args.checkpoint,
                                     "Use this checkpoint instead of the topology's [model]");
  cmd->add_option("--tokenizer", args.tokenizer, "... and this tokenizer")->needs(checkpoint);
  checkpoint->needs(cmd->get_option("--tokenizer"));
  cmd->callback([&exit_code] { exit_code = run_node(args); });
}

}  // namespace baton::tools
