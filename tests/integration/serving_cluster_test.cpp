// Disaggregated serving across real node processes on 127.0.0.1: a router, two
// Trainium-kind prefill nodes and two wafer-scale-kind decode nodes, the KV cache moved by
// libfabric RMA (tcp), requests sent through the router client.
#include <unistd.h>

#include <atomic>
#include <csignal>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <thread>

#include <fmt/format.h>
#include <gtest/gtest.h>
#include <nlohmann/json.hpp>

#include "client/router_client.hpp"
#include "cluster_harness.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/device.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"

namespace baton::testing {
namespace {

using namespace std::chrono_literals;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

struct outcome {
  expected<client::generate_result> result = fail(errc::failed, "not run");
  std::string text;
  std::size_t chunks = 0;
  std::vector<std::int32_t> tokens;
  [[nodiscard]] std::string output() const { return text + "\n"; }
};

/// Runs one request through a fresh router client.
outcome generate(const std::string& router, const std::string& prompt, float t, float p,
                 std::optional<std::uint64_t> seed, std::uint32_t steps,
                 std::uint32_t timeout_ms = 0) {
  outcome o;
  client::client_options co;
  co.routers = {router};
  auto c = client::router_client::connect(co);
  if (!c) {
    o.result = tl::unexpected(c.error());
    return o;
  }
  wire::generate_request r;
  r.prompt = prompt;
  r.max_positions = steps;
  r.params = {t, p, seed.value_or(0)};
  r.has_seed = seed.has_value();
  r.timeout_ms = timeout_ms;
  o.result = (*c)->generate(r, [&](const client::client_event& e) {
    if (const auto* a = std::get_if<wire::accepted>(&e)) {
      o.text += a->prompt_text;
    } else {
      const auto& chunk = std::get<wire::token_chunk>(e);
      o.text += chunk.text;
      o.tokens.insert(o.tokens.end(), chunk.tokens.begin(), chunk.tokens.end());
      ++o.chunks;
    }
    return true;
  });
  return o;
}

const std::vector<cluster_node> fleet = {
    {"router-0", {"router"}, "cpu"},
    {"prefill-0", {"prefill"}, "trainium"},
    {"prefill-1", {"prefill"}, "trainium"},
    {"decode-0", {"decode"}, "wafer-scale", "cpu", "kv_blocks = 1024"},
    {"decode-1", {"decode"}, "wafer-scale", "cpu", "kv_blocks = 1024"}};

/// A counter or gauge's value on a node, or -1.
double metric(const test_cluster& c, const std::string& node, const std::string& series) {
  return c.metric(node, series);
}

/// Starts every node (prefill-0 with `prefill0_args`) and waits until they all see each
/// other and the router places on every worker.
void start_all(test_cluster& c, std::vector<std::string> prefill0_args = {}) {
  ASSERT_TRUE(c.start_serving({{"prefill-0", std::move(prefill0_args)}}))
      << c.process("router-0").log();
}

TEST(ServingCluster, GreedyAndSeededOutputsAreByteIdenticalToTheReferences) {
  test_cluster c(fleet);
  start_all(c);
  auto greedy = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  ASSERT_TRUE(greedy.result) << greedy.result.error().to_string();
  EXPECT_EQ(greedy.output(), read_text(shared("expected_t0_n100.txt")));
  EXPECT_EQ(greedy.result->placement, "disaggregated");
  EXPECT_TRUE(greedy.result->prefill_node.starts_with("prefill-"));
  EXPECT_TRUE(greedy.result->decode_node.starts_with("decode-"));
  EXPECT_GT(greedy.chunks, 1u);  // streamed, not sent at the end
  auto seeded = generate(c.native("router-0"), "Lily and Ben", 0.8f, 0.95f, 7, 150);
  ASSERT_TRUE(seeded.result) << seeded.result.error().to_string();
  EXPECT_EQ(seeded.output(), read_text(shared("expected_t0.8_p0.95_s7_n150_lily.txt")));
  EXPECT_EQ(seeded.result->seed, 7u);
}

TEST(ServingCluster, ThirtyTwoConcurrentRequestsEachMatchTheirSingleProcessOutput) {
  test_cluster c(fleet);
  start_all(c);
  const std::uint64_t seed = 1129;
  std::printf("request mix seed %llu\n", static_cast<unsigned long long>(seed));
  std::mt19937_64 rng(seed);
  const std::vector<std::string> prompts = {"Once upon a time", "Lily and Ben", "The dog",
                                            "A little girl named Sue", "Tom had a red ball"};
  struct job {
    std::string prompt;
    float t;
    float p;
    std::uint64_t seed;
    std::uint32_t steps;
    outcome got;
  };
  std::vector<job> jobs(32);
  for (auto& j : jobs) {
    j.prompt = prompts[rng() % prompts.size()];
    j.t = rng() % 3 == 0 ? 0.0f : 0.8f;
    j.p = rng() % 2 == 0 ? 0.9f : 1.0f;
    j.seed = 1 + rng() % 1000;
    j.steps = static_cast<std::uint32_t>(30 + rng() % 250);
  }
  std::vector<std::thread> threads;
  for (auto& j : jobs) {
    threads.emplace_back(
        [&c, &j] { j.got = generate(c.native("router-0"), j.prompt, j.t, j.p, j.seed, j.steps); });
  }
  for (auto& t : threads) t.join();
  reference ref;
  std::set<std::string> decodes, prefills;
  for (const auto& j : jobs) {
    ASSERT_TRUE(j.got.result) << j.got.result.error().to_string();
    EXPECT_EQ(j.got.output(), ref(j.prompt, j.t, j.p, j.seed, static_cast<int>(j.steps)))
        << j.prompt << " t=" << j.t << " p=" << j.p << " seed=" << j.seed;
    decodes.insert(j.got.result->decode_node);
    prefills.insert(j.got.result->prefill_node);
  }
  EXPECT_EQ(decodes.size(), 2u);  // load-aware placement used both of each
  EXPECT_EQ(prefills.size(), 2u);
}

TEST(ServingCluster, ACorruptedSliceIsCaughtByItsChecksumAndRecomputed) {
  test_cluster c(fleet);
  // Every prefill node's 3rd slice write carries the wrong bytes.
  start_all(c, {"--fault-corrupt-slice", "2"});
  auto got = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  ASSERT_TRUE(got.result) << got.result.error().to_string();
  EXPECT_EQ(got.result->prefill_node.rfind("prefill-", 0), 0u);
  EXPECT_EQ(got.output(), read_text(shared("expected_t0_n100.txt")));
  const std::string d = got.result->decode_node;
  EXPECT_EQ(metric(c, d, "baton_decode_checksum_failures_total"), 1.0) << c.metrics(d);
  EXPECT_EQ(metric(c, d, "baton_decode_recomputed_total"), 1.0);
}

TEST(ServingCluster, LateWritesAfterACancelChangeNoOtherRequest) {
  // One prefill node, whose every slice write lands 1.5 s late: long after A gave up.
  const std::vector<cluster_node> nodes = {fleet[0], fleet[1], fleet[3]};
  test_cluster c(nodes);
  start_all(c, {"--fault-delay-writes-ms", "1500"});
  auto a = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 100, 300);
  ASSERT_FALSE(a.result) << "placed on " << a.result->prefill_node;
  // timed_out; overloaded if the loaded machine made membership suspect prefill-0 meanwhile.
  EXPECT_TRUE(a.result.error().code == errc::timed_out || a.result.error().code == errc::overloaded)
      << a.result.error().to_string();
  // B is admitted while A's blocks are quarantined, and decodes while A's writes land.
  auto b = generate(c.native("router-0"), "Lily and Ben", 0.8f, 0.95f, 7, 150);
  ASSERT_TRUE(b.result) << b.result.error().to_string();
  EXPECT_EQ(b.output(), read_text(shared("expected_t0.8_p0.95_s7_n150_lily.txt")));
  // Once every writer has ended, every block is free again.
  EXPECT_TRUE(
      wait_until([&] { return metric(c, "decode-0", "baton_decode_kv_free_blocks") == 1024; }, 10s))
      << c.metrics("decode-0");
}

TEST(ServingCluster, AClientThatDisconnectsMidStreamFreesItsBlocks) {
  test_cluster c(fleet);
  start_all(c);
  {
    child_process client({BATON_BINARY, "generate", "--router", c.native("router-0"),
                          "--temperature", "0", "--steps", "500", "Once upon a time"},
                         c.dir() / "client.log");
    ASSERT_TRUE(wait_until(
        [&] {
          return metric(c, "decode-0", "baton_decode_kv_free_blocks") < 1024 ||
                 metric(c, "decode-1", "baton_decode_kv_free_blocks") < 1024;
        },
        10s));
    client.signal(SIGKILL);
  }
  EXPECT_TRUE(wait_until(
      [&] {
        return metric(c, "decode-0", "baton_decode_kv_free_blocks") == 1024 &&
               metric(c, "decode-1", "baton_decode_kv_free_blocks") == 1024;
      },
      10s));
  EXPECT_EQ(metric(c, "router-0", "baton_router_requests_inflight"), 0.0);
}

TEST(ServingCluster, OverloadIsAnsweredAtOnceAndTheClusterRecovers) {
  test_cluster c(fleet, shared("stories260K.bin"), "[limits]\nmax_queued_requests = 2\n");
  start_all(c);
  std::vector<std::thread> busy;
  std::vector<outcome> long_ones(2);
  for (auto& o : long_ones) {
    busy.emplace_back([&c, &o] {
      o = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 500);
    });
  }
  ASSERT_TRUE(wait_until(
      [&] { return metric(c, "router-0", "baton_router_requests_inflight") == 2.0; }, 10s));
  const auto start = std::chrono::steady_clock::now();
  auto refused = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_FALSE(refused.result);
  EXPECT_EQ(refused.result.error().code, errc::overloaded);
  std::printf("overloaded answered in %.1f ms\n",
              std::chrono::duration<double, std::milli>(took).count());
  for (auto& t : busy) t.join();
  for (const auto& o : long_ones) ASSERT_TRUE(o.result) << o.result.error().to_string();
  auto again = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  ASSERT_TRUE(again.result);
  EXPECT_EQ(again.output(), read_text(shared("expected_t0_n100.txt")));
}

TEST(ServingCluster, ADecodeNodeKilledMidStreamLosesAndDuplicatesNothing) {
  test_cluster c(fleet);
  start_all(c);
  reference ref;
  const std::string expected = ref("Once upon a time", 0.0f, 0.9f, 1, 500);
  std::vector<outcome> got(4);
  std::vector<std::thread> threads;
  for (auto& o : got) {
    threads.emplace_back([&c, &o] {
      o = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 500);
    });
  }
  ASSERT_TRUE(
      wait_until([&] { return metric(c, "decode-0", "baton_decode_kv_free_blocks") < 1024; }, 10s));
  c.process("decode-0").signal(SIGKILL);
  for (auto& t : threads) t.join();
  for (const auto& o : got) {
    ASSERT_TRUE(o.result) << o.result.error().to_string();
    EXPECT_EQ(o.output(), expected);
  }
  EXPECT_GE(metric(c, "router-0", "baton_router_retries_total"), 1.0) << c.metrics("router-0");

  // The node comes back under its name (a new incarnation): every node takes it in again
  // and the router places on it, with the same text.
  c.start("decode-0");
  ASSERT_TRUE(wait_until(
      [&] {
        return metric(c, "router-0", R"(baton_router_workers{role="decode"})") == 2.0 &&
               c.state_of("prefill-0", "decode-0") == "alive" &&
               c.state_of("prefill-1", "decode-0") == "alive" &&
               c.state_of("decode-0", "prefill-0") == "alive" &&
               c.state_of("decode-0", "prefill-1") == "alive";
      },
      15s))
      << c.process("decode-0").log();
  std::vector<outcome> again(4);
  threads.clear();
  for (auto& o : again) {
    threads.emplace_back([&c, &o] {
      o = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 500);
    });
  }
  for (auto& t : threads) t.join();
  std::size_t on_restarted = 0;
  for (const auto& o : again) {
    ASSERT_TRUE(o.result) << o.result.error().to_string();
    EXPECT_EQ(o.output(), expected);
    on_restarted += o.result->decode_node == "decode-0" ? 1 : 0;
  }
  EXPECT_GE(on_restarted, 1u) << "the router never placed on the restarted node";
}

TEST(ServingCluster, EveryChoiceWithPenaltiesCompletesIdenticallyThroughADecodeNodeKill) {
  test_cluster c(fleet);
  start_all(c);
  wire::generate_request r;
  r.prompt = "Lily and Ben";
  r.max_positions = 400;
  r.n = 3;
  r.params = {0.8f, 0.95f, 7};
  r.has_seed = true;
  r.params.frequency_penalty = 0.6f;
  r.params.presence_penalty = 0.4f;
  r.params.repetition_penalty = 1.1f;
  r.params.top_k = 60;
  r.params.logit_bias = {{13, 3.0f}};
  r.params.ignore_eos = true;  // every choice runs its 400 positions: the kill hits them all
  client::client_options co;
  co.routers = {c.native("router-0")};
  auto client = client::router_client::connect(co);
  ASSERT_TRUE(client) << client.error().to_string();
  std::map<std::uint32_t, std::string> text;
  std::map<std::uint32_t, std::vector<std::uint32_t>> positions;
  std::string decode_node;
  std::thread killer;
  std::atomic<bool> killed{false};
  auto result = (*client)->generate(r, [&](const client::client_event& e) {
    if (const auto* a = std::get_if<wire::accepted>(&e)) {
      for (std::uint32_t i = 0; i < r.n; ++i) text[i] = a->prompt_text;
      decode_node = a->decode_node;
      return true;
    }
    const auto& chunk = std::get<wire::token_chunk>(e);
    text[chunk.choice] += chunk.text;
    for (std::size_t i = 0; i < chunk.tokens.size(); ++i) {
      positions[chunk.choice].push_back(chunk.first_position + static_cast<std::uint32_t>(i));
    }
    if (!killed && positions[2].size() >= 40) {  // mid-stream, every choice under way
      killed = true;
      c.process(decode_node).signal(SIGKILL);
    }
    return true;
  });
  ASSERT_TRUE(result) << result.error().to_string();
  ASSERT_TRUE(killed);
  reference ref;
  for (std::uint32_t i = 0; i < r.n; ++i) {
    engine::generate_options o{r.params.temperature, r.params.top_p, r.params.seed, 400};
    o.sampling.frequency_penalty = r.params.frequency_penalty;
    o.sampling.presence_penalty = r.params.presence_penalty;
    o.sampling.repetition_penalty = r.params.repetition_penalty;
    o.sampling.top_k = r.params.top_k;
    o.sampling.logit_bias = {{13, 3.0f}};
    o.ignore_eos = true;
    o.choice = i;
    EXPECT_EQ(text[i] + "\n", ref(r.prompt, o)) << "choice " << i;
    const auto& p = positions[i];
    for (std::size_t k = 1; k < p.size(); ++k) EXPECT_EQ(p[k], p[k - 1] + 1) << "choice " << i;
  }
  EXPECT_GE(metric(c, "router-0", "baton_router_retries_total"), 1.0) << c.metrics("router-0");
}

}  // namespace
}  // namespace baton::testing

namespace baton::testing {
namespace {

/// The tokens one emulated engine of the checkpoint's shape generates after `prompt`.
std::vector<std::int32_t> emulated_tokens(const std::string& prompt, std::size_t count) {
  auto model = engine::model::load(shared("stories260K.bin"));
  auto tok = engine::tokenizer::load(shared("tok512.bin"), model->config().vocab_size);
  auto setup =
      engine::resolve_emulated("emulated:cs3", "", model->config(), shared("stories260K.bin"), {});
  EXPECT_TRUE(setup) << setup.error().message;
  auto e = engine::emulated_engine::create(setup->profile, setup->shape, setup->options);
  EXPECT_TRUE(e) << e.error().message;
  auto seq = (*e)->add_sequence();
  auto step = (*e)->prefill(*seq, tok->encode(prompt, true, false));
  std::vector<std::int32_t> tokens{step->tokens[0]};
  while (tokens.size() < count) {
    const engine::decode_input in{*seq, tokens.back()};
    tokens.push_back((*e)->decode(std::span(&in, 1))->tokens[0]);
  }
  return tokens;
}

TEST(ServingCluster, EmulatedDevicesServeAcrossProcessesTheTokensTheirKvImplies) {
  const std::vector<cluster_node> nodes = {
      {"router-0", {"router"}, "cpu"},
      {"prefill-0", {"prefill"}, "trainium", "emulated:trn2"},
      {"decode-0", {"decode"}, "wafer-scale", "emulated:cs3", "kv_blocks = 512"}};
  test_cluster c(nodes, BATON_SHARED_MODELS_DIR "/stories260K.bin", "[emulated]\ntime_scale = 0\n");
  start_all(c);
  auto o = generate(c.native("router-0"), "Once upon a time", 0.0f, 0.9f, std::nullopt, 60);
  ASSERT_TRUE(o.result) << o.result.error().to_string();
  EXPECT_EQ(o.result->placement, "disaggregated");
  EXPECT_EQ(o.result->prefill_node, "prefill-0");
  // Each token is a hash of the KV the decode node holds, which came from prefill-0 by RMA.
  ASSERT_GE(o.tokens.size(), 50u);
  EXPECT_EQ(o.tokens, emulated_tokens("Once upon a time", o.tokens.size()));
  EXPECT_GT(o.result->router_us, 0u);
  EXPECT_GT(metric(c, "prefill-0", "baton_prefill_slices_total"), 0.0);
  const auto status = c.status("decode-0");
  ASSERT_TRUE(status);
  EXPECT_NE(status->dump().find("emulated:cs3"), std::string::npos) << status->dump();
}

TEST(ServingCluster, BenchRouterMeasuresTheRouterTimeOfEveryRequest) {
  child_process bench({BATON_BINARY, "bench", "router", "--rate", "400", "--requests", "300",
                       "--warmup", "30", "--clients", "4", "--seed", "11", "--json", "--model",
                       shared("stories260K.bin"), "--tokenizer", shared("tok512.bin")},
                      std::filesystem::temp_directory_path() /
                          fmt::format("baton-bench-router-test-{}.log", ::getpid()));
  const auto code = bench.wait(120s);
  ASSERT_TRUE(code && *code == 0) << bench.log();
  const std::string log = bench.log();
  const auto line = log.substr(log.rfind("{\""));
  const auto j = nlohmann::json::parse(line.substr(0, line.find('\n')));
  EXPECT_EQ(j["requests"], 300);
  EXPECT_EQ(j["failed"], 0);
  EXPECT_EQ(j["seed"], 11);
  EXPECT_GT(j["overhead_us_p50"].get<double>(), 0.0);
  EXPECT_GE(j["overhead_us_p99"].get<double>(), j["overhead_us_p50"].get<double>());
  // The router's time is part of what the client waited for.
  EXPECT_LT(j["overhead_us_p50"].get<double>(), j["e2e_us_p50"].get<double>());
  EXPECT_NE(j["device"].get<std::string>().find("emulated"), std::string::npos);
}

}  // namespace
}  // namespace baton::testing
