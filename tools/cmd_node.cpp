// `baton node --config cluster.toml --name NAME [--join SEED]`: runs one node of the
// topology: its runtime (membership, bridges, fabric), its admin port and, on a router,
// its front doors. SIGINT or SIGTERM makes it leave the cluster cleanly (a second one
// stops it at once). Once everything is bound it prints one line with the addresses
// (port 0 in the topology resolved), and once it has joined and its actors run, another:
//   node NAME listening fabric=ADDRESS admin=ADDRESS [native=ADDRESS] [http=ADDRESS]
//   node NAME ready
// POST /drain on its admin port (`baton drain`) makes it take no new work, finish what it
// has (moving what is left at the deadline to other nodes), leave and exit 0.
// Exit status: 0 after leaving (a signal, a drain) or when an operator's second signal
// stopped it; 1 when it failed (its actors crashed past their budget: restart it); 2 for a
// bad configuration (topology, model, an address that cannot be bound) and 3 when the
// cluster refused its join (model, KV layout or numerics differ): restarting changes
// neither. baton up and the systemd unit restart only 1 and deaths by signal.
#include <fcntl.h>
#include <sys/resource.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <charconv>
#include <csignal>
#include <map>
#include <mutex>
#include <random>
#include <thread>
#include <tuple>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <nlohmann/json.hpp>

#include "actors/router/router_actor.hpp"
#include "base/address.hpp"
#include "frontend/http_server.hpp"
#include "frontend/native_server.hpp"
#include "launcher/node_identity.hpp"
#include "launcher/role_actors.hpp"
#include "runtime/admin_server.hpp"
#include "runtime/membership.hpp"
#include "runtime/node.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

constexpr int exit_failed = 1;
constexpr int exit_config = 2;
constexpr int exit_refused = 3;
constexpr auto ready_poll = std::chrono::milliseconds(10);
constexpr auto drain_poll = std::chrono::milliseconds(20);
/// After evicting at the drain deadline, how long the node waits for its actors to let go.
constexpr auto evict_grace = std::chrono::seconds(3);

struct node_args {
  std::string config = "cluster.toml";
  std::string name;
  std::vector<std::string> join;
  std::uint64_t seed = 0;
  launcher::role_options roles;  ///< faults and baselines, for chaos tests and benchmarks
  std::uint32_t restarts = 0;    ///< set by baton up: times this node was restarted
  std::string checkpoint;        ///< overrides the topology's [model] (baton up's stand-in)
  std::string tokenizer;
  /// Override this node's addresses in the topology ("host:port"; port 0: any).
  std::string fabric, admin, native, http;
};

/// The node's topology entry with the command line's address overrides.
expected<void> override_addresses(const node_args& args, runtime::node_spec& spec) {
  for (const auto& [flag, value, field] :
       {std::tuple{"--fabric", &args.fabric, &spec.fabric_address},
        std::tuple{"--admin", &args.admin, &spec.admin_address},
        std::tuple{"--native", &args.native, &spec.native_address},
        std::tuple{"--http", &args.http, &spec.http_address}}) {
    if (value->empty()) continue;
    if (auto ok = parse_host_port(*value, port_zero::allowed); !ok) {
      return fail(ok.error(), fmt::format("{}: ", flag));
    }
    *field = *value;
  }
  if ((!args.native.empty() || !args.http.empty()) && !spec.has_role(wire::role::router)) {
    return fail(errc::invalid_argument, "--native and --http are for a node with the router role");
  }
  return {};
}

std::string status_json(runtime::node& n) {
  nlohmann::json members = nlohmann::json::array();
  for (const auto& m : n.members()) {
    nlohmann::json roles = nlohmann::json::array();
    for (auto r : m.roles) roles.push_back(runtime::to_string(r));
    members.push_back({{"node", m.node},
                       {"kind", runtime::to_string(m.kind)},
                       {"device", m.device},
                       {"roles", roles},
                       {"state", runtime::to_string(m.state)},
                       {"draining", m.draining},
                       {"restarts", m.restarts},
                       {"incarnation", m.incarnation},
                       {"fabric", m.fabric_address},
                       {"admin", m.admin_address}});
  }
  const nlohmann::json status = {
      {"node", n.spec().name},    {"incarnation", n.context().incarnation()},
      {"pid", getpid()},          {"ready", n.ready()},
      {"draining", n.draining()}, {"work", n.context().work()},
      {"members", members}};
  return status.dump();
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

/// SIGINT and SIGTERM, from whichever thread the kernel picks, go to a pipe that a thread
/// reads: a handler of our own rather than a blocked mask, since a library loaded before
/// main (libpsm's) installs handlers that exit(1) and may own threads we never masked.
class signal_pipe {
 public:
  signal_pipe() {
    if (pipe2(fds_.data(), O_CLOEXEC) != 0) return;
    write_fd_.store(fds_[1]);
    struct sigaction sa {};
    sa.sa_handler = [](int sig) {
      const int saved = errno;
      const auto byte = static_cast<char>(sig);
      (void)!write(write_fd_.load(), &byte, 1);
      errno = saved;
    };
    sigemptyset(&sa.sa_mask);
    for (int sig : {SIGINT, SIGTERM}) sigaction(sig, &sa, nullptr);
  }
  ~signal_pipe() {
    for (int sig : {SIGINT, SIGTERM}) std::signal(sig, SIG_DFL);
    for (int fd : fds_) close(fd);
  }
  signal_pipe(const signal_pipe&) = delete;
  signal_pipe& operator=(const signal_pipe&) = delete;

  /// Turns signals into leave (the first) and stop (the next) until close().
  std::thread watch(runtime::node& n) {
    return std::thread([this, &n] {
      int leaves = 0;
      char sig = 0;
      while (read(fds_[0], &sig, 1) == 1 && sig != 0) {
        if (leaves++ == 0) {
          spdlog::info("signal {}: leaving the cluster", static_cast<int>(sig));
          n.leave();
        } else {
          n.stop(runtime::stop_reason::stopped, "stopped by a second signal");
        }
      }
    });
  }
  /// Ends the watching thread.
  void close_watch() {
    const char stop = 0;
    (void)!write(fds_[1], &stop, 1);
  }

 private:
  static inline std::atomic<int> write_fd_{-1};
  std::array<int, 2> fds_{-1, -1};
};

/// A node's running pieces. They start in this order: a router's front doors (which answer
/// "not running" until the router registers), the admin port, then the node, which peers
/// learn those addresses from. They stop in the reverse order of their declaration: the
/// ports first, while the node they call into still runs.
struct running_node {
  ~running_node() {
    if (drainer.joinable()) drainer.join();
  }
  std::unique_ptr<launcher::serving_model> model;
  std::shared_ptr<actors::router_entry> router = std::make_shared<actors::router_entry>();
  actors::router_gateway gateway{router};
  std::atomic<runtime::node*> node{nullptr};  ///< set once started, for the ports' routes
  std::unique_ptr<runtime::node> owner;
  std::unique_ptr<runtime::admin_server> admin;
  std::unique_ptr<frontend::native_server> native;
  std::unique_ptr<frontend::http_server> http;
  std::mutex drain_mutex;
  std::thread drainer;  ///< runs a drain; joined first (declared last)
};

/// Takes no new work, waits for what the node holds to finish, moves what is left at
/// `deadline` to other nodes, then leaves (the node's wait() then returns `left`).
void drain(running_node& r, std::chrono::milliseconds deadline) {
  auto& node = *r.owner;
  const auto until = std::chrono::steady_clock::now() + deadline;
  spdlog::info("draining: no new work; {} held; leaving when it is done or in {} ms",
               node.context().work(), deadline.count());
  while (node.context().work() > 0 && std::chrono::steady_clock::now() < until) {
    std::this_thread::sleep_for(drain_poll);
  }
  if (const auto left = node.context().work(); left > 0) {
    spdlog::warn("drain deadline: {} still held move to other nodes", left);
    for (const char* actor : {actors::router_name, actors::decode_name, actors::prefill_name}) {
      if (auto a = node.context().lookup(actor)) caf::anon_send(a, actors::evict_atom::value);
    }
    const auto grace = std::chrono::steady_clock::now() + evict_grace;
    while (node.context().work() > 0 && std::chrono::steady_clock::now() < grace) {
      std::this_thread::sleep_for(drain_poll);
    }
  }
  spdlog::info("drained: leaving the cluster");
  node.leave();
}

/// The admin port's POST /drain: starts the drain once; later calls report it.
std::string start_drain(running_node& r, std::chrono::milliseconds deadline) {
  auto* n = r.node.load();
  if (n == nullptr) return R"({"draining":false,"error":"the node is not running yet"})";
  std::lock_guard lock(r.drain_mutex);
  if (!n->draining()) {
    n->drain();
    r.router->draining.store(true);
    r.drainer = std::thread([&r, deadline] { drain(r, deadline); });
  }
  return nlohmann::json{{"node", n->spec().name},
                        {"draining", true},
                        {"work", n->context().work()},
                        {"deadline_ms", deadline.count()}}
      .dump();
}

/// "host:port" as bound: the topology's host and the port actually listened on.
std::string bound(const std::string& address, std::uint16_t port) {
  return fmt::format("{}:{}", address.substr(0, address.rfind(':')), port);
}

expected<void> start_front_doors(const runtime::topology& t, const runtime::node_spec& spec,
                                 running_node& r) {
  if (!spec.has_role(wire::role::router)) return {};
  if (!spec.native_address.empty()) {
    frontend::server_options so;
    so.address = spec.native_address;
    so.default_timeout_ms = t.timeouts.request_ms;
    so.api_keys_file = t.router.api_keys.string();  // the same keys and certificate as HTTP
    so.tls_certificate_file = t.router.tls_certificate.string();
    so.tls_key_file = t.router.tls_key.string();
    auto server = frontend::native_server::start(so, r.gateway);
    if (!server) return tl::unexpected(server.error());
    r.native = std::move(*server);
  }
  if (!spec.http_address.empty()) {
    frontend::http_options ho;
    ho.address = spec.http_address;
    ho.model = t.model.checkpoint.stem().string();
    ho.max_tokens_limit = t.limits.max_new_tokens;
    ho.default_timeout_ms = t.timeouts.request_ms;
    ho.api_keys_file = t.router.api_keys.string();
    ho.tls_certificate_file = t.router.tls_certificate.string();
    ho.tls_key_file = t.router.tls_key.string();
    ho.metrics_text = [&r] {
      auto* n = r.node.load();
      return n ? n->metrics().prometheus_text() + worker_metrics(*n) : std::string();
    };
    ho.healthy = [&r] {
      auto* n = r.node.load();
      return n != nullptr && static_cast<bool>(n->context().lookup(actors::router_name));
    };
    auto server = frontend::http_server::start(std::move(ho), r.gateway);
    if (!server) return tl::unexpected(server.error());
    r.http = std::move(*server);
  }
  return {};
}

expected<void> start_admin(const runtime::node_spec& spec, running_node& r) {
  auto admin = runtime::admin_server::start(
      spec.admin_address,
      {[&r] { return r.node.load() != nullptr; },
       [&r] {
         auto* n = r.node.load();
         if (n == nullptr) return std::string();
         return n->metrics().prometheus_text() +
                (r.native ? frontend::prometheus_text(r.native->stats()) : std::string());
       },
       [&r] {
         auto* n = r.node.load();
         return n ? status_json(*n) : std::string("{}");
       },
       [&r] {
         auto* n = r.node.load();
         return n != nullptr && n->ready();
       },
       [&r](std::chrono::milliseconds deadline) { return start_drain(r, deadline); }});
  if (!admin) return tl::unexpected(admin.error());
  r.admin = std::move(*admin);
  return {};
}

/// Loads what the node needs, starts it and its ports; the error says what failed.
expected<std::unique_ptr<running_node>> start(const node_args& args) {
  auto topology = runtime::load_topology(args.config);
  if (!topology) return tl::unexpected(topology.error());
  if (!args.checkpoint.empty())
    topology->model = {args.checkpoint, args.tokenizer, {}, false, false};
  if (const auto missing = topology->model.missing(); !missing.empty()) {
    const bool named = topology->model.checkpoint_named || topology->model.tokenizer_named;
    return fail(errc::not_found, fmt::format("{}: {}{}", args.config, missing,
                                             named ? "; " + runtime::model_path_hint() : ""));
  }
  auto* spec = topology->find(args.name);
  if (spec == nullptr) {
    return fail(errc::not_found, fmt::format("{}: no node named '{}'", args.config, args.name));
  }
  if (auto ok = override_addresses(args, *spec); !ok) return tl::unexpected(ok.error());
  // Before anything binds: no stranger may join a cluster reachable from other hosts.
  if (auto ok = runtime::check_exposure(*topology, *spec); !ok) return tl::unexpected(ok.error());
  std::shared_ptr<const runtime::cluster_secret> secret;
  if (!topology->secret.empty()) {
    auto loaded = runtime::cluster_secret::load(topology->secret);
    if (!loaded) return tl::unexpected(loaded.error());
    secret = std::make_shared<const runtime::cluster_secret>(*loaded);
    spdlog::info("cluster secret from {}: joins through this node, and its own, prove it",
                 topology->secret.string());
  } else if (topology->insecure) {
    spdlog::warn(
        "insecure = true and no cluster secret: any process that reaches this node's ports "
        "can join the cluster (docs/security.md)");
  }
  auto identity = launcher::node_identity(*topology);
  if (!identity) return tl::unexpected(identity.error());
  auto model = launcher::load_serving_model(*topology);
  if (!model) return tl::unexpected(model.error());
  auto r = std::make_unique<running_node>();
  r->model = std::move(*model);
  if (auto ok = start_front_doors(*topology, *spec, *r); !ok) return tl::unexpected(ok.error());
  if (auto ok = start_admin(*spec, *r); !ok) return tl::unexpected(ok.error());
  auto roles = args.roles;
  roles.router = r->router;
  if (r->native) roles.native_address = bound(spec->native_address, r->native->local_port());
  if (r->http) roles.http_address = bound(spec->http_address, r->http->local_port());
  runtime::node_options options;
  options.topology = *topology;
  options.name = args.name;
  options.admin_address = bound(spec->admin_address, r->admin->port());
  options.join = args.join;
  options.identity = *identity;
  options.restarts = args.restarts;
  options.secret = std::move(secret);
  options.random_seed = args.seed != 0 ? args.seed : std::random_device{}();
  options.actors = launcher::role_actors(*topology, *spec, *r->model, roles);
  auto n = runtime::node::start(std::move(options));
  if (!n) return tl::unexpected(n.error());
  r->owner = std::move(*n);
  r->node.store(r->owner.get());
  const auto& s = r->owner->spec();
  fmt::print("node {} listening fabric={} admin={}{}{}\n", s.name, s.fabric_address,
             s.admin_address, roles.native_address.empty() ? "" : " native=" + roles.native_address,
             roles.http_address.empty() ? "" : " http=" + roles.http_address);
  std::fflush(stdout);
  spdlog::info("node {} serving: fabric {} ({}), admin {}", s.name, s.fabric_address,
               topology->provider, s.admin_address);
  return r;
}

/// Every client connection is an open file (a router allows thousands: http_options,
/// server_options): the soft limit goes up to the hard one.
void raise_open_files_limit() {
  rlimit limit{};
  if (::getrlimit(RLIMIT_NOFILE, &limit) != 0 || limit.rlim_cur >= limit.rlim_max) return;
  const auto before = limit.rlim_cur;
  limit.rlim_cur = limit.rlim_max;
  if (::setrlimit(RLIMIT_NOFILE, &limit) == 0) {
    spdlog::debug("open files limit raised from {} to {}", before, limit.rlim_cur);
  }
}

int run_node(const node_args& args) {
  spdlog::flush_on(spdlog::level::info);  // logs go to files and pipes: no buffering
  raise_open_files_limit();
  signal_pipe signals;  // before anything slow: a signal while starting still means "leave"

  auto running = start(args);
  if (!running) {
    spdlog::error("node {}: {}", args.name, running.error().message);
    return exit_config;
  }
  auto& node = *(*running)->owner;
  auto watcher = signals.watch(node);
  // One line once the node has joined and its actors run (what scripts wait for).
  std::atomic<bool> done{false};
  std::thread readiness([&] {
    while (!done.load() && !node.ready()) std::this_thread::sleep_for(ready_poll);
    if (done.load()) return;
    fmt::print("node {} ready\n", args.name);
    std::fflush(stdout);
  });
  const auto stopped = node.wait();
  done.store(true);
  readiness.join();
  signals.close_watch();
  watcher.join();
  switch (stopped.reason) {
    case runtime::stop_reason::left:
    case runtime::stop_reason::stopped:
      spdlog::info("node {} stopped ({}): {}", args.name, runtime::to_string(stopped.reason),
                   stopped.detail);
      return 0;
    case runtime::stop_reason::refused:
      spdlog::error("node {} stopped: {}", args.name, stopped.detail);
      return exit_refused;
    case runtime::stop_reason::failed: break;
  }
  spdlog::error("node {} failed: {}", args.name, stopped.detail);
  return exit_failed;
}

}  // namespace

void add_node_command(CLI::App& app, int& exit_code) {
  auto* cmd = app.add_subcommand("node", "Run one node of a topology");
  static node_args args;
  cmd->add_option("--config", args.config, "Topology file")->capture_default_str();
  cmd->add_option("--name", args.name, "This node's name in the topology")->required();
  cmd->add_option("--join", args.join, "Seed to join through (node name or fabric address)");
  cmd->add_option("--seed", args.seed, "Random seed for probe order (0: random, logged)");
  cmd->add_option("--restarts", args.restarts,
                  "Times this node was restarted (set by baton up; shown by baton status)");
  cmd->add_option("--fabric", args.fabric, "This node's fabric address (overrides the topology)");
  cmd->add_option("--admin", args.admin, "This node's admin address (overrides the topology)");
  cmd->add_option("--native", args.native, "A router's client port (overrides the topology)");
  cmd->add_option("--http", args.http, "A router's HTTP API address (overrides the topology)");
  // Faults injected on purpose, for chaos tests; never in production.
  cmd->add_option_function<std::uint64_t>(
      "--fault-corrupt-slice", [](std::uint64_t n) { args.roles.faults.corrupt_slice = n; },
      "Chaos: the N-th KV slice this prefill node writes (from 0) carries wrong bytes");
  cmd->add_option_function<int>(
      "--fault-delay-writes-ms",
      [](int ms) { args.roles.faults.delay_writes = std::chrono::milliseconds(ms); },
      "Chaos: post every KV slice write this much later");
  cmd->add_option_function<std::string>(
         "--fault-crash",
         [](const std::string& v) {
           const auto colon = v.find(':');
           const auto role = v.substr(0, colon);
           std::uint64_t after = 0;
           const auto count = colon == std::string::npos ? std::string() : v.substr(colon + 1);
           const auto [end, ec] = std::from_chars(count.data(), count.data() + count.size(), after);
           const std::map<std::string, wire::role> roles = {{"router", wire::role::router},
                                                            {"prefill", wire::role::prefill},
                                                            {"decode", wire::role::decode}};
           if (!roles.contains(role) || ec != std::errc{} || end != count.data() + count.size() ||
               after == 0) {
             throw CLI::ValidationError(
                 "--fault-crash", fmt::format("'{}': expected ROLE:N, ROLE router, prefill or "
                                              "decode and N >= 1",
                                              v));
           }
           args.roles.crash = {roles.at(role), after};
         },
         "Chaos: this node's ROLE actor crashes at its N-th message (ROLE:N), once")
      ->type_name("ROLE:N");
  cmd->add_flag("--kv-after-compute", args.roles.kv_after_compute,
                "Ship a prompt's KV only once it is fully computed (the serial baseline)");
  auto* checkpoint = cmd->add_option("--checkpoint", args.checkpoint,
                                     "Use this checkpoint instead of the topology's [model]");
  cmd->add_option("--tokenizer", args.tokenizer, "... and this tokenizer")->needs(checkpoint);
  checkpoint->needs(cmd->get_option("--tokenizer"));
  cmd->callback([&exit_code] { exit_code = run_node(args); });
}

}  // namespace baton::tools
