// `baton bench actors [--provider tcp|shm] [--json]`: remote actor round trip (p50, p99)
// and pipelined message throughput between two node processes over Baton's runtime, and
// in the same run the same exchange over CAF's own remote actors (the io middleman over
// TCP) as the reference, and Baton's again with frame MACs on (a cluster secret).
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <future>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>
#include <caf/io/all.hpp>
#include <nlohmann/json.hpp>

#include "bench/commands.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "launcher/child_process.hpp"
#include "launcher/node_identity.hpp"
#include "runtime/node.hpp"
#include "runtime/remote_actor.hpp"

namespace baton::bench {
namespace {

using namespace std::chrono_literals;
using ping_atom = caf::atom_constant<caf::atom("b_ping")>;
using clock = std::chrono::steady_clock;

struct bench_args {
  std::string provider = "tcp";
  bool json = false;
  int round_trips = 5000;
  int messages = 100000;
  int window = 64;
  int payload_bytes = 64;
  bool caf_peer = false;  // hidden: run as the CAF reference's peer
};

struct result {
  std::string transport;
  double msgs_per_s = 0;
  double rtt_us_p50 = 0;
  double rtt_us_p99 = 0;
};

/// Sequential round trips, then `messages` requests with `window` in flight. `Send` is
/// `(self, seq, on_reply)`: sends one request and calls on_reply() when it is answered.
template <class Send>
caf::behavior measurer(caf::event_based_actor* self, Send send, bench_args args,
                       std::shared_ptr<std::promise<result>> done, std::string transport) {
  struct run_state {
    std::vector<double> rtt_us;
    clock::time_point sent;
    int completed = 0;
    int issued = 0;
    clock::time_point started;
    result out;
  };
  auto st = std::make_shared<run_state>();
  st->out.transport = transport;
  auto pipeline = std::make_shared<std::function<void()>>();
  auto round_trip = std::make_shared<std::function<void(int)>>();
  auto finish = [=] {
    std::sort(st->rtt_us.begin(), st->rtt_us.end());
    st->out.rtt_us_p50 = st->rtt_us[st->rtt_us.size() / 2];
    st->out.rtt_us_p99 = st->rtt_us[st->rtt_us.size() * 99 / 100];
    done->set_value(st->out);
    *pipeline = nullptr;  // the closures refer to each other: break the cycle
    *round_trip = nullptr;
    self->quit();
  };
  *pipeline = [=] {
    while (st->issued < args.messages && st->issued - st->completed < args.window) {
      send(self, static_cast<std::uint64_t>(st->issued++), [=] {
        if (++st->completed == args.messages) {
          const std::chrono::duration<double> took = clock::now() - st->started;
          st->out.msgs_per_s = args.messages / took.count();
          finish();
          return;
        }
        (*pipeline)();
      });
    }
  };
  *round_trip = [=](int i) {
    if (i == args.round_trips) {
      st->started = clock::now();
      (*pipeline)();
      return;
    }
    st->sent = clock::now();
    send(self, static_cast<std::uint64_t>(i + 1000000), [=] {
      if (i >= 0)
        st->rtt_us.push_back(
            std::chrono::duration<double, std::micro>(clock::now() - st->sent).count());
      (*round_trip)(i + 1);
    });
  };
  (*round_trip)(-200);  // 200 warm-up round trips are not recorded
  return {[](caf::unit_t) {}};
}

/// Baton's run; `sealed`: the nodes share a cluster secret, so every frame carries a MAC.
expected<result> bench_baton(const bench_args& args, const std::filesystem::path& dir,
                             bool sealed) {
  // Nodes only compare the model's hash here: a tiny synthetic checkpoint will do, with a
  // tokenizer node processes can load (the 256 byte-fallback tokens need vocab >= 259).
  const auto model = dir / "tiny.bin";
  constexpr std::int32_t vocab = 260;
  if (auto ok = engine::write_synthetic_model(model.string(), {8, 16, 1, 2, 2, vocab, 16, true}, 1);
      !ok) {
    return tl::unexpected(ok.error());
  }
  const auto tokenizer = dir / "tiny-tokenizer.bin";
  if (auto ok = engine::write_synthetic_tokenizer(tokenizer.string(), vocab); !ok) {
    return tl::unexpected(ok.error());
  }
  // Every port 0: node a (here) binds first, node b (a child) joins through its address.
  const bool shm = args.provider == "shm";
  const auto fabric = [&](const char* name) {
    return shm ? fmt::format("bench-{}-{}", name, getpid()) : std::string("127.0.0.1:0");
  };
  // Sealed: both nodes hold a cluster secret, so every frame carries a MAC.
  const auto secret = dir / "secret";
  std::filesystem::remove(secret);
  if (sealed) {
    if (auto made = runtime::cluster_secret::create(secret); !made) {
      return tl::unexpected(made.error());
    }
  }
  const auto config = dir / fmt::format("bench{}.toml", sealed ? "-sealed" : "");
  std::ofstream(config) << fmt::format(
      "[cluster]\nname = \"bench\"\nprovider = \"{}\"\nseeds = [\"a\"]\n{}\n"
      "[model]\ncheckpoint = \"{}\"\ntokenizer = \"{}\"\n\n"
      "[[node]]\nname = \"a\"\nkind = \"cpu\"\nroles = [\"router\"]\nfabric = \"{}\"\n"
      "admin = \"127.0.0.1:0\"\n\n"
      "[[node]]\nname = \"b\"\nkind = \"cpu\"\nroles = [\"decode\"]\nfabric = \"{}\"\n"
      "admin = \"127.0.0.1:0\"\n",
      args.provider, sealed ? fmt::format("secret = \"{}\"\n", secret.string()) : "",
      model.string(), tokenizer.string(), fabric("a"), fabric("b"));
  auto topology = runtime::load_topology(config);
  if (!topology) return tl::unexpected(topology.error());
  auto identity = launcher::node_identity(*topology);
  if (!identity) return tl::unexpected(identity.error());
  runtime::node_options options;
  options.topology = *topology;
  options.name = "a";
  options.identity = *identity;
  options.random_seed = 1;
  if (sealed) {
    auto loaded = runtime::cluster_secret::load(secret);
    if (!loaded) return tl::unexpected(loaded.error());
    options.secret = std::make_shared<const runtime::cluster_secret>(*loaded);
  }
  auto n = runtime::node::start(std::move(options));
  if (!n) return tl::unexpected(n.error());
  auto& node = **n;
  launcher::child_process peer({"/proc/self/exe", "node", "--config", config.string(), "--name",
                                "b", "--join", node.spec().fabric_address},
                               dir / "peer-b.log");
  const auto until = clock::now() + 15s;
  auto joined = [&] {
    for (const auto& m : node.members()) {
      if (m.node == "b" && m.state == wire::member_state::alive) return true;
    }
    return false;
  };
  while (!joined() && clock::now() < until) std::this_thread::sleep_for(10ms);
  if (!joined()) return fail(errc::timed_out, "the peer node did not join within 15 s");
  auto& ctx = node.context();
  const runtime::remote_actor echo(ctx, {"b", "echo"});
  const std::vector<std::uint32_t> tokens(static_cast<std::size_t>(args.payload_bytes / 4), 7);
  auto done = std::make_shared<std::promise<result>>();
  auto future = done->get_future();
  auto send = [&ctx, echo, tokens](caf::event_based_actor* self, std::uint64_t seq,
                                   std::function<void()> on_reply) {
    echo.request(self, "bench", wire::token_batch{wire::request_id{seq}, 0, 0, tokens, {}}, 10s)
        .then([on_reply](runtime::inbound&) { on_reply(); },
              [](caf::error& e) { spdlog::error("bench request failed: {}", caf::to_string(e)); });
  };
  auto actor = node.system().spawn(measurer<decltype(send)>, send, args, done,
                                   "baton-" + args.provider + (sealed ? "-sealed" : ""));
  ctx.publish("bench", actor);
  if (future.wait_for(120s) != std::future_status::ready) {
    return fail(errc::timed_out, "the Baton run did not finish within 120 s");
  }
  return future.get();
}

expected<result> bench_caf(const bench_args& args, const std::filesystem::path& dir) {
  // The peer publishes its echo actor on a free port and reports it.
  launcher::child_process peer({"/proc/self/exe", "bench", "actors", "--caf-peer"},
                               dir / "peer-caf.log");
  const auto line = peer.wait_for_line("caf peer port ", 30s);
  if (!line) return fail(errc::failed, "the CAF peer reported no port:\n" + peer.log());
  const int port = std::atoi(line->c_str() + std::string_view("caf peer port ").size());
  caf::actor_system_config cfg;
  runtime::node::configure(cfg);
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  caf::expected<caf::actor> remote = caf::sec::cannot_connect_to_node;
  for (auto until = clock::now() + 10s; clock::now() < until; std::this_thread::sleep_for(20ms)) {
    remote = sys.middleman().remote_actor("127.0.0.1", static_cast<std::uint16_t>(port));
    if (remote) break;
  }
  if (!remote) {
    return fail(errc::disconnected, "cannot reach the CAF peer: " + sys.render(remote.error()));
  }
  const std::string payload(static_cast<std::size_t>(args.payload_bytes), 'x');
  auto done = std::make_shared<std::promise<result>>();
  auto future = done->get_future();
  auto send = [target = *remote, payload](caf::event_based_actor* self, std::uint64_t seq,
                                          std::function<void()> on_reply) {
    self->request(target, 10s, ping_atom::value, seq, payload)
        .then([on_reply](std::uint64_t, const std::string&) { on_reply(); },
              [](caf::error& e) { spdlog::error("caf request failed: {}", caf::to_string(e)); });
  };
  auto actor = sys.spawn(measurer<decltype(send)>, send, args, done, "caf-io-middleman-tcp");
  const bool finished = future.wait_for(120s) == std::future_status::ready;
  if (!finished) return fail(errc::timed_out, "the CAF run did not finish within 120 s");
  return future.get();
}

/// The CAF reference's peer: an echo actor published on a free port by the io middleman,
/// reported as "caf peer port N".
int serve_caf() {
  caf::actor_system_config cfg;
  runtime::node::configure(cfg);
  cfg.load<caf::io::middleman>();
  caf::actor_system sys{cfg};
  // `unused`: CAF 0.17 trips UBSan on spawned functions without arguments.
  auto echo = sys.spawn(
      [](int /*unused*/) -> caf::behavior {
        return {[](ping_atom, std::uint64_t seq, const std::string& payload) {
          return caf::make_message(seq, payload);
        }};
      },
      0);
  auto published = sys.middleman().publish(echo, 0, "127.0.0.1");
  if (!published) return 1;
  fmt::print("caf peer port {}\n", *published);
  std::fflush(stdout);
  std::this_thread::sleep_for(std::chrono::hours(1));  // killed by the parent
  return 0;
}

void print(const bench_args& args, const std::vector<result>& results) {
  if (args.json) {
    for (const auto& r : results) {
      fmt::print("{}\n", nlohmann::json{{"transport", r.transport},
                                        {"msgs_per_s", r.msgs_per_s},
                                        {"rtt_us_p50", r.rtt_us_p50},
                                        {"rtt_us_p99", r.rtt_us_p99}}
                             .dump());
    }
    return;
  }
  fmt::print("{:<24} {:>12} {:>12} {:>12}\n", "transport", "msgs/s", "rtt p50 us", "rtt p99 us");
  for (const auto& r : results) {
    fmt::print("{:<24} {:>12.0f} {:>12.1f} {:>12.1f}\n", r.transport, r.msgs_per_s, r.rtt_us_p50,
               r.rtt_us_p99);
  }
  if (results.size() >= 3) {
    fmt::print(
        "baton/caf: throughput {:.2f}x, rtt p50 {:.2f}x ({} round trips, {} messages "
        "with {} in flight, {}-byte payload)\n",
        results[0].msgs_per_s / results[2].msgs_per_s,
        results[0].rtt_us_p50 / results[2].rtt_us_p50, args.round_trips, args.messages, args.window,
        args.payload_bytes);
    fmt::print("sealed/plain (frame MACs on/off): throughput {:.3f}x, rtt p50 {:.3f}x\n",
               results[1].msgs_per_s / results[0].msgs_per_s,
               results[1].rtt_us_p50 / results[0].rtt_us_p50);
  }
}

int run(const bench_args& args) {
  if (args.caf_peer) return serve_caf();
  spdlog::set_level(spdlog::level::warn);
  const auto dir = std::filesystem::temp_directory_path() / fmt::format("baton-bench-{}", getpid());
  std::filesystem::create_directories(dir);
  std::vector<result> results;
  for (const std::string which : {"baton", "baton-sealed", "caf"}) {
    auto r = which == "caf" ? bench_caf(args, dir) : bench_baton(args, dir, which != "baton");
    if (!r) {
      fmt::print(stderr, "baton bench actors: {}: {} (logs in {})\n", which, r.error().message,
                 dir.string());
      return 1;
    }
    results.push_back(*r);
  }
  print(args, results);
  std::filesystem::remove_all(dir);
  return 0;
}

}  // namespace

void add_bench_actors_command(CLI::App& app, int& exit_code) {
  auto& bench = bench_command(app);
  static bench_args args;
  auto* cmd =
      bench.add_subcommand("actors", "Remote actor RTT and throughput vs CAF's io middleman");
  cmd->add_option("--provider", args.provider, "tcp or shm")->check(CLI::IsMember({"tcp", "shm"}));
  cmd->add_flag("--json", args.json, "One JSON object per line per transport");
  cmd->add_option("--round-trips", args.round_trips, "Timed sequential round trips");
  cmd->add_option("--messages", args.messages, "Requests in the throughput run");
  cmd->add_option("--window", args.window, "Requests in flight in the throughput run");
  cmd->add_option("--payload", args.payload_bytes, "Payload bytes per message");
  cmd->add_flag("--caf-peer", args.caf_peer)->group("");  // internal: the reference's peer
  cmd->callback([&exit_code] { exit_code = run(args); });
}

}  // namespace baton::bench
