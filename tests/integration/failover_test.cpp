// Failover across real node processes on 127.0.0.1 (issue: failover without a single
// point, and an elastic fleet): nodes of every role SIGKILLed, restarted, drained, added
// from outside the cluster's file, and actors crashed inside a live node, all during
// traffic. Every request must complete byte-identical to the single-process output.
// Each test prints its figures (completed identical out of sent; the stall from the fault
// to the next token of each request in flight, p50 and p99) on a "figures:" line.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdio>
#include <fstream>
#include <mutex>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "client/router_client.hpp"
#include "cluster_harness.hpp"
#include "runtime/admin_server.hpp"
#include "tests/support/test_seeds.hpp"

namespace baton::testing {
namespace {

using namespace std::chrono_literals;
using clock_type = std::chrono::steady_clock;
using json = nlohmann::json;

const std::vector<std::string> prompts = {"Once upon a time", "Lily and Ben", "The cat",
                                          "One day, a little girl"};

/// One request of the traffic: what was asked, what came back and when.
struct request_log {
  std::string prompt;
  std::uint64_t seed = 0;
  std::string text;
  std::vector<clock_type::time_point> events;  ///< each chunk's arrival
  expected<client::generate_result> result = fail(errc::failed, "not run");
};

/// `log`'s request: its prompt and seed, temperature 0.9, top-p 0.9, `steps` positions.
wire::generate_request request_of(const request_log& log, std::uint32_t steps,
                                  std::uint32_t timeout_ms) {
  wire::generate_request r;
  r.prompt = log.prompt;
  r.max_positions = steps;
  r.params = {0.9f, 0.9f, log.seed};
  r.has_seed = true;
  r.timeout_ms = timeout_ms;
  return r;
}

/// `clients` threads, each sending `per_client` requests one after another through a
/// router client over `routers` (temperature 0.9, top-p 0.9, seed `seed + i`, `steps`
/// positions).
class traffic {
 public:
  traffic(std::vector<std::string> routers, int clients, int per_client, std::uint32_t steps,
          std::uint64_t seed)
      : logs_(static_cast<std::size_t>(clients * per_client)), steps_(steps) {
    for (std::size_t i = 0; i < logs_.size(); ++i) {
      logs_[i].prompt = prompts[i % prompts.size()];
      logs_[i].seed = seed + i;
    }
    for (int c = 0; c < clients; ++c) {
      threads_.emplace_back([this, routers, c, per_client] {
        client::client_options co;
        co.routers = routers;
        auto client = client::router_client::connect(co);
        for (int j = 0; j < per_client; ++j) {
          auto& log = logs_[static_cast<std::size_t>(c * per_client + j)];
          if (!client) {
            log.result = tl::unexpected(client.error());
            continue;
          }
          run_one(**client, log);
        }
      });
    }
  }
  ~traffic() { join(); }

  void join() {
    for (auto& t : threads_) {
      if (t.joinable()) t.join();
    }
  }

  /// Requests that have received at least one token.
  [[nodiscard]] std::size_t streaming() const { return streaming_.load(); }
  [[nodiscard]] const std::vector<request_log>& logs() const { return logs_; }

 private:
  void run_one(client::router_client& client, request_log& log) {
    bool first = true;
    log.result =
        client.generate(request_of(log, steps_, 60'000), [&](const client::client_event& e) {
          std::lock_guard lock(mutex_);
          if (const auto* a = std::get_if<wire::accepted>(&e)) {
            log.text += a->prompt_text;
          } else {
            log.text += std::get<wire::token_chunk>(e).text;
            log.events.push_back(clock_type::now());
            if (first) ++streaming_;
            first = false;
          }
          return true;
        });
  }

  std::vector<request_log> logs_;
  std::uint32_t steps_;
  std::vector<std::thread> threads_;
  std::atomic<std::size_t> streaming_{0};
  std::mutex mutex_;  ///< guards the logs while requests run
};

/// Checks every request against the single-process output and prints the figures (unless
/// `kind` is empty): how many completed identical, and for the requests in flight at each
/// of `faults`, the time to their next token. Returns how many completed identical.
std::size_t check_and_report(const std::string& kind, const traffic& t,
                             const std::vector<clock_type::time_point>& faults, reference& ref,
                             std::uint32_t steps) {
  std::size_t identical = 0;
  std::vector<double> stalls_ms;
  for (const auto& log : t.logs()) {
    if (!log.result) {
      ADD_FAILURE() << log.prompt << " seed " << log.seed << ": " << log.result.error().to_string();
      continue;
    }
    const auto expected = ref(log.prompt, 0.9f, 0.9f, log.seed, static_cast<int>(steps));
    EXPECT_EQ(log.text + "\n", expected) << log.prompt << " seed " << log.seed;
    identical += log.text + "\n" == expected ? 1 : 0;
    for (const auto fault : faults) {
      const auto next = std::upper_bound(log.events.begin(), log.events.end(), fault);
      if (next == log.events.begin() || next == log.events.end()) continue;  // not in flight
      stalls_ms.push_back(std::chrono::duration<double, std::milli>(*next - fault).count());
    }
  }
  std::sort(stalls_ms.begin(), stalls_ms.end());
  const auto at = [&](double q) {
    return stalls_ms.empty()
               ? 0.0
               : stalls_ms[std::min(
                     stalls_ms.size() - 1,
                     static_cast<std::size_t>(q * static_cast<double>(stalls_ms.size())))];
  };
  if (kind.empty()) return identical;
  if (faults.empty()) {
    fmt::print("figures: {}: {}/{} completed identical\n", kind, identical, t.logs().size());
    return identical;
  }
  fmt::print(
      "figures: {}: {}/{} completed identical; stall to the next token over {} requests in "
      "flight: p50 {:.0f} ms, p99 {:.0f} ms, max {:.0f} ms\n",
      kind, identical, t.logs().size(), stalls_ms.size(), at(0.5), at(0.99),
      stalls_ms.empty() ? 0.0 : stalls_ms.back());
  return identical;
}

const std::vector<cluster_node> two_of_each = {
    {"router-0", {"router"}, "cpu"},
    {"router-1", {"router"}, "cpu"},
    {"prefill-0", {"prefill"}, "trainium"},
    {"prefill-1", {"prefill"}, "trainium"},
    {"decode-0", {"decode"}, "wafer-scale", "cpu", "kv_blocks = 1024"},
    {"decode-1", {"decode"}, "wafer-scale", "cpu", "kv_blocks = 1024"}};

std::uint64_t seed_for_test(std::uint64_t fallback) {
  const auto seed = test_seeds(fallback, 1).front();
  (void)replay_hint(seed);  // printed
  return seed;
}

TEST(FailoverCluster, BothPrefillNodesKilledAndRestartedDuringTrafficFailNothing) {
  test_cluster c(two_of_each);
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  reference ref;
  constexpr std::uint32_t steps = 200;
  traffic t({c.native("router-0"), c.native("router-1")}, 4, 8, steps, seed_for_test(100));
  ASSERT_TRUE(wait_until([&] { return t.streaming() >= 4; }, 20s));
  const auto fault = clock_type::now();
  c.process("prefill-0").signal(SIGKILL);
  c.process("prefill-1").signal(SIGKILL);
  // Every prefill node is gone for half a second: what arrives waits for one.
  std::this_thread::sleep_for(500ms);
  c.start("prefill-0");
  c.start("prefill-1");
  t.join();
  check_and_report("both prefill nodes killed, restarted 0.5 s later", t, {fault}, ref, steps);
  EXPECT_EQ(c.metric("router-0", R"(baton_router_requests_total{outcome="unavailable"})") +
                c.metric("router-1", R"(baton_router_requests_total{outcome="unavailable"})"),
            0);
}

TEST(FailoverCluster, ARouterKilledMidStreamIsResumedByTheOtherWithoutRecompute) {
  test_cluster c(two_of_each);
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  reference ref;
  constexpr std::uint32_t steps = 400;
  // Every client starts on router-0; router-1 is where they resume.
  traffic t({c.native("router-0"), c.native("router-1")}, 6, 2, steps, seed_for_test(200));
  ASSERT_TRUE(wait_until([&] { return t.streaming() >= 6; }, 20s));
  const auto fault = clock_type::now();
  c.process("router-0").signal(SIGKILL);
  t.join();
  check_and_report("router killed mid-stream (native clients resume)", t, {fault}, ref, steps);
  std::size_t resumed = 0;
  for (const auto& log : t.logs()) resumed += log.result && log.result->resumes > 0 ? 1 : 0;
  EXPECT_GE(resumed, 1u);
  EXPECT_GE(c.metric("router-1", "baton_router_resumed_total"), 1.0) << c.metrics("router-1");
  EXPECT_GE(c.metric("router-1", "baton_router_claimed_attempts_total"), 1.0)
      << "the decode nodes kept the dead router's sequences and handed them over";

  // Restarted, the router rejoins and serves within a second of being ready.
  const auto restarted = clock_type::now();
  c.start("router-0");
  ASSERT_TRUE(c.process("router-0").wait_for_line("node router-0 ready", 20s)) << c.log("router-0");
  const auto ready_ms =
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - restarted);
  traffic after({c.native("router-0")}, 1, 1, 100, 300);
  after.join();
  ASSERT_TRUE(after.logs()[0].result) << after.logs()[0].result.error().to_string() << "\n"
                                      << c.log("router-0");
  EXPECT_EQ(after.logs()[0].result->router, c.native("router-0"));
  fmt::print("figures: restarted router ready {} ms after its start, then served\n",
             ready_ms.count());
}

/// The text of an SSE completion body's chunks so far, and the seed its first chunk names.
std::pair<std::string, std::uint64_t> sse_so_far(const std::string& body) {
  std::string text;
  std::uint64_t seed = 0;
  std::size_t at = 0;
  while ((at = body.find("data: {", at)) != std::string::npos) {
    const auto end = body.find("\n\n", at);
    if (end == std::string::npos) break;
    const auto j = json::parse(body.substr(at + 6, end - at - 6), nullptr, false);
    at = end;
    if (j.is_discarded() || j["choices"].empty()) continue;
    text += j["choices"][0]["text"].get<std::string>();
    if (j.contains("baton")) seed = j["baton"]["seed"].get<std::uint64_t>();  // the first chunk
  }
  return {text, seed};
}

TEST(FailoverCluster, AnHttpStreamCutByARouterDeathIsRetriedOnTheOtherWithTheSameText) {
  test_cluster c(two_of_each);
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  const auto body_file = c.dir() / "stream-body";
  const json request = {{"model", "stories260K"}, {"prompt", "Once upon a time"},
                        {"max_tokens", 400},      {"temperature", 0.9},
                        {"top_p", 0.9},           {"stream", true}};
  std::jthread stream([&] {
    (void)run(
        fmt::format("curl -sS -N --max-time 60 -o {} -X POST -H 'Content-Type: application/json' "
                    "--data-binary {} {}",
                    quote(body_file.string()), quote(request.dump()),
                    quote("http://" + c.http("router-0") + "/v1/completions")));
  });
  const auto read_body = [&] {
    std::ifstream in(body_file, std::ios::binary);
    return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  };
  ASSERT_TRUE(wait_until([&] { return sse_so_far(read_body()).first.size() > 20; }, 20s));
  c.process("router-0").signal(SIGKILL);
  stream.join();
  const auto body = read_body();
  EXPECT_EQ(body.find("data: [DONE]"), std::string::npos) << "the stream ended early: " << body;
  const auto [cut, seed] = sse_so_far(body);

  // The retry names the seed the first answer returned, on the other router.
  json retry = request;
  retry["stream"] = false;
  retry["seed"] = seed;
  const auto answer = run(fmt::format(
      "curl -sS --max-time 60 -X POST -H 'Content-Type: application/json' --data-binary {} {}",
      quote(retry.dump()), quote("http://" + c.http("router-1") + "/v1/completions")));
  const auto j = json::parse(answer.out, nullptr, false);
  ASSERT_FALSE(j.is_discarded()) << answer.out;
  const std::string text = j["choices"][0]["text"];
  EXPECT_TRUE(text.starts_with(cut)) << "cut: " << cut << "\nretried: " << text;
  reference ref;
  const int prompt_tokens = j["usage"]["prompt_tokens"];
  EXPECT_EQ(ref.echo("Once upon a time") + text + "\n",
            ref("Once upon a time", 0.9f, 0.9f, seed, prompt_tokens + 400 - 1));
  fmt::print("figures: HTTP stream cut after {} bytes, retried with seed {}: identical\n",
             cut.size(), seed);
}

TEST(FailoverCluster, AnActorCrashInsideALiveNodeMigratesItsRequestsIdentically) {
  test_cluster c(two_of_each);
  // decode-0's decode actor crashes at its 40th message; its supervisor restarts it.
  ASSERT_TRUE(c.start_serving({{"decode-0", {"--fault-crash", "decode:40"}}})) << c.log("router-0");
  reference ref;
  constexpr std::uint32_t steps = 200;
  traffic t({c.native("router-0")}, 4, 6, steps, seed_for_test(400));
  ASSERT_TRUE(wait_until(
      [&] { return c.log("decode-0").find("fault injected") != std::string::npos; }, 30s))
      << c.log("decode-0");
  const auto fault = c.logged_at("decode-0", "fault injected");
  ASSERT_TRUE(fault);
  t.join();
  check_and_report("decode actor crash (restarted by its supervisor)", t, {*fault}, ref, steps);
  EXPECT_GE(c.metric("router-0", R"(baton_router_migrations_total{cause="actor_crash"})"), 1.0)
      << c.metrics("router-0");
  EXPECT_TRUE(c.process("decode-0").wait(0ms) == std::nullopt) << "the node itself lives on";
}

TEST(FailoverCluster, ADrainedNodeFinishesItsWorkLeavesAndExitsZeroWithNothingFailed) {
  test_cluster c(two_of_each);
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  reference ref;
  constexpr std::uint32_t steps = 200;
  traffic t({c.native("router-0"), c.native("router-1")}, 4, 8, steps, seed_for_test(500));
  ASSERT_TRUE(wait_until([&] { return t.streaming() >= 4; }, 20s));
  const auto drain = run(fmt::format("{} drain decode-0 --via {} --deadline-s 2 2>&1", BATON_BINARY,
                                     quote(c.admin("prefill-0"))));
  EXPECT_EQ(drain.status, 0) << drain.out;
  EXPECT_NE(drain.out.find("decode-0 drained and left"), std::string::npos) << drain.out;
  const auto status = c.process("decode-0").wait(10s);
  ASSERT_TRUE(status) << c.log("decode-0");
  EXPECT_TRUE(WIFEXITED(*status) && WEXITSTATUS(*status) == 0) << c.log("decode-0");
  t.join();
  check_and_report("decode node drained during traffic", t, {}, ref, steps);
  // Shrinking to one decode node and growing back, still under traffic.
  traffic more({c.native("router-1")}, 2, 6, steps, 600);
  c.start("decode-0");
  more.join();
  check_and_report("decode node rejoining during traffic", more, {}, ref, steps);
}

TEST(FailoverCluster, ANodeTheClusterFileDoesNotListJoinsWithItsOwnTopologyAndServes) {
  test_cluster c({{"router-0", {"router"}, "cpu"},
                  {"prefill-0", {"prefill"}, "trainium"},
                  {"decode-0", {"decode"}, "wafer-scale", "cpu", "kv_blocks = 1024"}});
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  // Its own file: the same model and layout, one node, itself.
  const auto own = c.dir() / "decode-9.toml";
  {
    std::ifstream in(c.topology_file());
    std::string text(std::istreambuf_iterator<char>(in), {});
    text = text.substr(0, text.find("[[node]]"));
    text +=
        "[[node]]\nname = \"decode-9\"\nkind = \"wafer-scale\"\ndevice = \"cpu\"\n"
        "roles = [\"decode\"]\nfabric = \"127.0.0.1:0\"\nadmin = \"127.0.0.1:0\"\n"
        "kv_blocks = 1024\n";
    // Its seed is itself: the cluster is found through --join.
    const auto seeds = text.find("seeds = [");
    text.replace(seeds, text.find('\n', seeds) - seeds, "seeds = [\"decode-9\"]");
    std::ofstream(own) << text;
  }
  c.process("decode-0").signal(SIGKILL);  // so that only the newcomer can decode
  auto& newcomer = c.start("decode-9", {"--join", c.fabric("router-0")}, own);
  ASSERT_TRUE(newcomer.wait_for_line("node decode-9 ready", 20s)) << newcomer.log();
  const auto joined = clock_type::now();
  reference ref;
  traffic t({c.native("router-0")}, 2, 2, 100, seed_for_test(700));
  t.join();
  check_and_report("a node from outside the cluster's file", t, {}, ref, 100);
  for (const auto& log : t.logs()) {
    if (log.result) {
      EXPECT_EQ(log.result->decode_node, "decode-9");
    }
  }
  fmt::print(
      "figures: the newcomer served {} ms after its ready line\n",
      std::chrono::duration_cast<std::chrono::milliseconds>(clock_type::now() - joined).count());
}

TEST(FailoverCluster, AMachineSaturatedForTwoMinutesDeclaresNoNodeDead) {
  test_cluster c(two_of_each);
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  // Four busy processes per core, at the nodes' priority, for two minutes
  // (BATON_SATURATION_SECONDS), while requests keep coming.
  const char* env = std::getenv("BATON_SATURATION_SECONDS");
  const auto seconds = std::chrono::seconds(env ? std::atoi(env) : 120);
  std::vector<std::unique_ptr<child_process>> hogs;
  for (unsigned i = 0; i < 4 * std::max(1u, std::thread::hardware_concurrency()); ++i) {
    hogs.push_back(std::make_unique<child_process>(
        std::vector<std::string>{"/bin/sh", "-c", "while :; do :; done"},
        c.dir() / fmt::format("hog-{}.log", i)));
  }
  reference ref;
  const auto seed = seed_for_test(900);
  const auto until = clock_type::now() + seconds;
  std::size_t sent = 0;
  std::size_t identical = 0;
  for (std::uint64_t round = 0; clock_type::now() < until; ++round) {
    traffic t({c.native("router-0"), c.native("router-1")}, 2, 2, 100, seed + 10 * round);
    t.join();
    identical += check_and_report("", t, {}, ref, 100);
    sent += t.logs().size();
  }
  hogs.clear();  // killed
  double false_suspicions = 0;
  for (const auto& n : two_of_each) {
    EXPECT_EQ(c.metric(n.name, "baton_membership_deaths_total"), 0) << n.name << " saw a death";
    false_suspicions += c.metric(n.name, "baton_membership_false_suspicions_total");
  }
  fmt::print(
      "figures: {} s saturated ({} busy processes): {}/{} requests completed identical, no "
      "node declared dead, {} false suspicions refuted\n",
      seconds.count(), 4 * std::max(1u, std::thread::hardware_concurrency()), identical, sent,
      false_suspicions);
}

/// The process running `baton node --config CONFIG --name NAME`, or -1.
pid_t pid_of_node(const std::filesystem::path& config, const std::string& name) {
  const auto wanted = "--config" + std::string(1, '\0') + config.string() + std::string(1, '\0') +
                      "--name" + std::string(1, '\0') + name + std::string(1, '\0');
  for (const auto& e : std::filesystem::directory_iterator("/proc")) {
    std::ifstream in(e.path() / "cmdline", std::ios::binary);
    const std::string cmdline(std::istreambuf_iterator<char>(in), {});
    if (cmdline.find(wanted) != std::string::npos) return std::atoi(e.path().filename().c_str());
  }
  return -1;
}

/// The listening line `baton up` relayed for `name`.
launcher::node_addresses addresses_in(const std::string& up_log, const std::string& name) {
  const auto at = up_log.find(fmt::format("node {} listening ", name));
  if (at == std::string::npos) return {};
  return launcher::parse_listening_line(up_log.substr(at, up_log.find('\n', at) - at))
      .value_or(launcher::node_addresses{});
}

/// Requests started together on one router client (its asynchronous API): what each
/// received, and how it ended.
class concurrent_requests {
 public:
  concurrent_requests(client::router_client& client, std::size_t n, std::uint32_t steps,
                      std::uint64_t seed)
      : logs_(n), ended_(n, false), chunks_(n, 0) {
    for (std::size_t i = 0; i < n; ++i) {
      auto& log = logs_[i];
      log.prompt = prompts[i % prompts.size()];
      log.seed = seed + i;
      handles_.push_back(client.start(
          request_of(log, steps, 120'000),
          [this, i](const client::client_event& e) {
            std::lock_guard lock(mutex_);
            if (const auto* a = std::get_if<wire::accepted>(&e)) {
              logs_[i].text += a->prompt_text;
            } else {
              logs_[i].text += std::get<wire::token_chunk>(e).text;
              logs_[i].events.push_back(clock_type::now());
              ++chunks_[i];
            }
            changed_.notify_all();
            return true;
          },
          [this, i](expected<client::generate_result> result) {
            std::lock_guard lock(mutex_);
            logs_[i].result = std::move(result);
            ended_[i] = true;
            changed_.notify_all();
          }));
    }
  }

  /// Waits (60 s at most) until `done` holds, under the lock.
  bool wait(const std::function<bool()>& done) {
    std::unique_lock lock(mutex_);
    return changed_.wait_for(lock, 60s, done);
  }
  bool wait_ended() {
    return wait(
        [&] { return std::all_of(ended_.begin(), ended_.end(), [](bool e) { return e; }); });
  }
  /// Requests with at least `n` chunks.
  std::size_t with_chunks(std::size_t n) const {
    return static_cast<std::size_t>(
        std::count_if(chunks_.begin(), chunks_.end(), [n](std::size_t c) { return c >= n; }));
  }
  std::size_t chunks(std::size_t i) const { return chunks_[i]; }
  void cancel(std::size_t i) { handles_[i].cancel(); }
  std::vector<request_log>& logs() { return logs_; }

 private:
  std::vector<request_log> logs_;
  std::vector<bool> ended_;
  std::vector<std::size_t> chunks_;
  std::vector<client::request_handle> handles_;
  std::mutex mutex_;
  std::condition_variable changed_;
};

TEST(FailoverCluster, OneClientMultiplexesStreamsCancelsOneAndResumesThemThroughTheOtherRouter) {
  test_cluster c(two_of_each);
  ASSERT_TRUE(c.start_serving()) << c.log("router-0");
  reference ref;
  const auto seed = seed_for_test(900);
  constexpr std::uint32_t steps = 200;
  {
    // 64 streams at once over one connection; one is cancelled mid-stream.
    client::client_options co;
    co.routers = {c.native("router-0")};
    auto client = client::router_client::connect(co);
    ASSERT_TRUE(client) << client.error().to_string();
    concurrent_requests run(**client, 64, steps, seed);
    constexpr std::size_t cancelled = 5;
    ASSERT_TRUE(run.wait([&] { return run.chunks(cancelled) >= 3; })) << c.log("router-0");
    run.cancel(cancelled);
    ASSERT_TRUE(run.wait_ended()) << c.log("router-0");
    std::size_t identical = 0;
    for (std::size_t i = 0; i < run.logs().size(); ++i) {
      const auto& log = run.logs()[i];
      ASSERT_TRUE(log.result) << i << ": " << log.result.error().to_string();
      const auto expected = ref(log.prompt, 0.9f, 0.9f, log.seed, static_cast<int>(steps));
      if (i == cancelled) {
        EXPECT_EQ(log.result->reason, wire::finish_reason::cancelled);
        EXPECT_TRUE(expected.starts_with(log.text)) << "what arrived before the cancel";
        continue;
      }
      EXPECT_EQ(log.text + "\n", expected) << log.prompt << " seed " << log.seed;
      identical += log.text + "\n" == expected ? 1 : 0;
    }
    EXPECT_EQ(c.metric("router-0", "baton_native_connections_accepted_total"), 1.0)
        << c.metrics("router-0");
    fmt::print(
        "figures: 64 streams over one connection: {}/63 completed identical, one "
        "cancelled mid-stream\n",
        identical);
  }
  // A pool over both routers: requests on the one killed go on through the other.
  client::client_options co;
  co.routers = {c.native("router-0"), c.native("router-1")};
  auto client = client::router_client::connect(co);
  ASSERT_TRUE(client) << client.error().to_string();
  ASSERT_TRUE(wait_until(
      [&] {
        const auto routers = (*client)->routers();
        return std::all_of(routers.begin(), routers.end(),
                           [](const auto& r) { return r.now == client::router_health::state::up; });
      },
      10s));
  concurrent_requests run(**client, 12, 400, seed + 100);
  ASSERT_TRUE(run.wait([&] { return run.with_chunks(2) == 12; })) << c.log("router-0");
  c.process("router-0").signal(SIGKILL);
  ASSERT_TRUE(run.wait_ended());
  std::size_t resumed = 0;
  std::size_t identical = 0;
  for (const auto& log : run.logs()) {
    ASSERT_TRUE(log.result) << log.result.error().to_string();
    const auto expected = ref(log.prompt, 0.9f, 0.9f, log.seed, 400);
    EXPECT_EQ(log.text + "\n", expected) << log.prompt << " seed " << log.seed;
    identical += log.text + "\n" == expected ? 1 : 0;
    if (log.result->resumes > 0) {
      ++resumed;
      EXPECT_EQ(log.result->router, c.native("router-1"));
    }
  }
  EXPECT_EQ(resumed, 6u) << "the pool placed half the requests on each router";
  fmt::print(
      "figures: a pool of two routers, one killed mid-stream: {}/12 completed "
      "identical, {} resumed through the other\n",
      identical, resumed);
}

TEST(FailoverCluster, BatonUpRestartsAKilledNodeWhichServesAgain) {
  test_cluster c(two_of_each);  // only its topology file: baton up runs the nodes
  child_process up({BATON_BINARY, "up", c.topology_file().string()}, c.dir() / "up.log");
  ASSERT_TRUE(up.wait_for_line("ready: router native=", 60s)) << up.log();
  ASSERT_TRUE(
      wait_until([&] { return up.log().find("node decode-1 ready") != std::string::npos; }, 30s))
      << up.log();
  const auto pid = pid_of_node(c.topology_file(), "decode-0");
  ASSERT_GT(pid, 0);
  ::kill(pid, SIGKILL);
  ASSERT_TRUE(wait_until(
      [&] {
        const auto log = up.log();
        const auto restart = log.find("restarting decode-0 in 200 ms (restart 1,");
        return restart != std::string::npos &&
               log.find("node decode-0 ready", restart) != std::string::npos;
      },
      30s))
      << up.log();
  EXPECT_NE(pid_of_node(c.topology_file(), "decode-0"), pid);

  // The router places on it again, and baton status counts the restart.
  const auto router = addresses_in(up.log(), "router-0");
  ASSERT_TRUE(wait_until(
      [&] {
        const auto m = runtime::admin_get(router.admin, "/metrics", 1s);
        return m && m->find("baton_router_workers{role=\"decode\"} 2") != std::string::npos;
      },
      10s));
  const auto status = run(fmt::format("{} status --node {}", BATON_BINARY, router.admin)).out;
  const auto row = status.substr(status.find("\ndecode-0 "));
  EXPECT_NE(row.substr(0, row.find('\n', 1)).find("alive"), std::string::npos) << status;
  EXPECT_NE(row.substr(0, row.find('\n', 1)).find(" 1 "), std::string::npos) << status;
  reference ref;
  traffic t({router.native}, 4, 2, 100, seed_for_test(800));
  t.join();
  check_and_report("baton up restarting a SIGKILLed decode node", t, {}, ref, 100);
  std::size_t on_restarted = 0;
  for (const auto& log : t.logs())
    on_restarted += log.result && log.result->decode_node == "decode-0";
  EXPECT_GE(on_restarted, 1u);

  up.signal(SIGTERM);
  const auto code = up.wait(30s);
  ASSERT_TRUE(code) << up.log();
  EXPECT_TRUE(WIFEXITED(*code) && WEXITSTATUS(*code) == 0) << up.log();
}

}  // namespace
}  // namespace baton::testing
