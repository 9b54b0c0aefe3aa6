// The serving state classes together, in one process: router, prefill and decode on the
// real stories260K model, joined by serving_fleet's message queue.

#include <fstream>
#include <iterator>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "actors/sampling.hpp"
#include "tests/simulation/actors/serving_fleet.hpp"
#include "tests/support/test_seeds.hpp"

namespace baton::actors::testing {
namespace {

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(Serving, GreedyDisaggregatedMatchesLlama2c) {
  fleet f;
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  const client_log& log = f.log(id);
  ASSERT_TRUE(log.finished) << (log.rejected ? log.rejected->message : "no end");
  EXPECT_EQ(log.output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(log.accepted->placement, "disaggregated");
  EXPECT_EQ(log.accepted->prefill_node.rfind("prefill-", 0), 0u);
  EXPECT_GT(f.messages("prefillDone"), 0u);
  // The router sends one admit; the decode node sends the job to the prefill node itself,
  // and a request that ends by length ends on its last tokens message (no finish).
  EXPECT_EQ(f.messages("admit"), 1u);
  EXPECT_EQ(f.messages("prefill"), 1u);
  if (log.finished->reason == wire::finish_reason::length) {
    EXPECT_EQ(f.messages("finish"), 0u);
  }
}

TEST(Serving, SeededDisaggregatedMatchesLlama2c) {
  fleet f;
  const auto id = f.submit("Lily and Ben", 0.8f, 0.95f, 7, 150);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0.8_p0.95_s7_n150_lily.txt")));
  EXPECT_EQ(f.log(id).accepted->seed, 7u);
}

TEST(Serving, SlicesShippedAfterTheComputeGiveTheSameText) {
  fleet_options o;
  o.prefill.pipeline = false;
  fleet f(o);
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(f.prefill("prefill-0").stats().slices, 5u);  // one block x 5 layers
}

TEST(Serving, ThirtyTwoConcurrentRequestsEachMatchSingleProcess) {
  fleet f;
  const std::uint64_t seed = baton::testing::test_seeds(20261129, 1).front();
  SCOPED_TRACE(baton::testing::replay_hint(seed));
  std::mt19937_64 rng(seed);
  const std::vector<std::string> prompts = {
      "Once upon a time",        "Lily and Ben",       "The dog",
      "A little girl named Sue", "Tom had a red ball", "One day"};
  struct job {
    wire::request_id id;
    std::string expected;
  };
  std::vector<job> jobs;
  for (int i = 0; i < 32; ++i) {
    const std::string& prompt = prompts[rng() % prompts.size()];
    const float temperature = i % 3 == 0 ? 0.0f : 0.5f + 0.1f * static_cast<float>(rng() % 6);
    const float top_p = i % 2 == 0 ? 0.9f : 1.0f;
    const std::uint64_t s = rng() % 1000;
    const auto steps = static_cast<std::uint32_t>(20 + rng() % 180);
    jobs.push_back({f.submit(prompt, temperature, top_p, s, steps),
                    f.reference(prompt, temperature, top_p, s, static_cast<int>(steps))});
  }
  f.pump();
  for (const auto& j : jobs) {
    ASSERT_TRUE(f.log(j.id).finished);
    EXPECT_EQ(f.log(j.id).output(), j.expected);
  }
  // Both decode nodes served, and every block came back.
  for (const char* d : {"decode-0", "decode-1"}) {
    EXPECT_GT(f.decode(d).stats().tokens, 0u) << d;
    EXPECT_EQ(f.decode(d).active(), 0u);
    EXPECT_EQ(f.decode(d).uncommitted_blocks(), 512u);
    EXPECT_EQ(f.decode_engine(d).pool().free_blocks(), 512u);
  }
  EXPECT_EQ(f.router().inflight(), 0u);
}

TEST(Serving, RouterAssignsAndReportsASeedWhenTheRequestHasNone) {
  fleet f;
  const auto id = f.submit("Lily and Ben", 0.8f, 0.95f, std::nullopt, 60);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  const std::uint64_t seed = f.log(id).accepted->seed;
  EXPECT_EQ(f.log(id).output(), f.reference("Lily and Ben", 0.8f, 0.95f, seed, 60));
}

TEST(Serving, CorruptedSliceIsCaughtAndRecomputed) {
  fleet f;
  f.writer("prefill-0").corrupt = 3;
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0_n100.txt")));
  const auto& d = f.decode(f.log(id).accepted->decode_node).stats();
  EXPECT_EQ(d.checksum_failures, 1u);
  EXPECT_EQ(d.recomputed, 1u);
}

TEST(Serving, LateWritesAfterTimeoutAndRetryTouchNoOtherRequest) {
  fleet_options o;
  o.decode_nodes = 1;
  fleet f(o);
  // prefill-0 is picked first; its writes stall past the decode node's KV timeout.
  f.writer("prefill-0").hold = true;
  const auto a = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  EXPECT_FALSE(f.log(a).done());
  ASSERT_FALSE(f.writer("prefill-0").held.empty());
  f.advance(std::chrono::milliseconds(10'001));  // timeout -> quarantine, retry on prefill-1
  EXPECT_GT(f.decode("decode-0").quarantined_blocks(), 0u);
  const auto b = f.submit("Lily and Ben", 0.8f, 0.95f, 7, 150);
  // Let b decode a few tokens, then let the stale writes land.
  f.pump([&] { return f.log(b).positions().size() >= 5; });
  f.writer("prefill-0").release_held();
  f.pump();
  ASSERT_TRUE(f.log(a).finished);
  ASSERT_TRUE(f.log(b).finished);
  EXPECT_EQ(f.log(a).output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(f.log(b).output(), read_text(shared_model("expected_t0.8_p0.95_s7_n150_lily.txt")));
  EXPECT_EQ(f.decode("decode-0").quarantined_blocks(), 0u);
  EXPECT_EQ(f.decode("decode-0").uncommitted_blocks(), 512u);
  EXPECT_GE(f.router().stats().retries, 1u);
}

TEST(Serving, CancelWhileWritesAreHeldKeepsBlocksQuarantined) {
  fleet_options o;
  o.decode_nodes = 1;
  fleet f(o);
  f.writer("prefill-0").hold = true;
  const auto a = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  f.client_gone(a);
  f.pump();
  EXPECT_GT(f.decode("decode-0").quarantined_blocks(), 0u);  // the writer is still writing
  f.writer("prefill-0").release_held();
  f.pump();
  EXPECT_EQ(f.decode("decode-0").quarantined_blocks(), 0u);
  EXPECT_EQ(f.decode("decode-0").active(), 0u);
  EXPECT_EQ(f.decode_engine("decode-0").pool().free_blocks(), 512u);
}

TEST(Serving, ASlowClientPausesItsDecodeAndNotTheOthers) {
  fleet_options o;
  o.decode_nodes = 1;
  fleet f(o);
  const auto slow = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 400);
  f.slow_client(slow, true);
  const auto other = f.submit("Lily and Ben", 0.8f, 0.95f, 7, 150);
  f.pump();
  // The other request finished; the slow one stopped at its window and holds its blocks.
  ASSERT_TRUE(f.log(other).finished);
  EXPECT_EQ(f.log(other).output(), read_text(shared_model("expected_t0.8_p0.95_s7_n150_lily.txt")));
  EXPECT_FALSE(f.log(slow).done());
  const std::size_t prompt = f.log(slow).accepted->prompt_tokens;
  ASSERT_FALSE(f.log(slow).positions().empty());
  EXPECT_EQ(f.log(slow).positions().back() + 1, prompt + wire::initial_stream_window);
  EXPECT_EQ(f.decode("decode-0").parked(), 1u);
  EXPECT_FALSE(f.decode("decode-0").has_work());
  // It catches up: generation resumes and the text is whole.
  f.slow_client(slow, false);
  f.pump();
  ASSERT_TRUE(f.log(slow).finished);
  EXPECT_EQ(f.log(slow).output(), f.reference("Once upon a time", 0.0f, 0.9f, 1, 400));
}

TEST(Serving, ClientGoneMidStreamFreesItsBlocks) {
  fleet f;
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 200);
  f.pump([&] { return f.log(id).positions().size() >= 10; });
  const std::string d = f.log(id).accepted->decode_node;
  EXPECT_LT(f.decode(d).uncommitted_blocks(), 512u);
  f.client_gone(id);
  f.pump();
  EXPECT_FALSE(f.log(id).finished);
  EXPECT_EQ(f.decode(d).active(), 0u);
  EXPECT_EQ(f.decode(d).uncommitted_blocks(), 512u);
  EXPECT_EQ(f.decode_engine(d).pool().free_blocks(), 512u);
  EXPECT_EQ(f.router().stats().client_gone, 1u);
}

TEST(Serving, AClientGoneBeforeThePrefillStartsCancelsTheJobTheDecodeNodeSent) {
  fleet f;
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 200);
  const std::string p = f.log(id).accepted->prefill_node;
  const std::string d = f.log(id).accepted->decode_node;
  // Gone before anything is delivered: the router's cancel reaches the prefill node before
  // the job does (they come from different nodes); the decode node's own cancel follows
  // its job, so the job is dropped before any compute or write.
  f.client_gone(id);
  f.pump();
  EXPECT_EQ(f.prefill(p).stats().jobs, 0u) << "never computed";
  EXPECT_EQ(f.prefill(p).stats().aborted, 1u);
  EXPECT_EQ(f.prefill(p).stats().slices, 0u);
  EXPECT_EQ(f.decode(d).active(), 0u);
  EXPECT_EQ(f.decode(d).uncommitted_blocks(), 512u);
}

TEST(Serving, OverloadIsAnsweredAtOnceAndTheRouterRecovers) {
  fleet_options o;
  o.router.max_inflight = 2;
  fleet f(o);
  f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 50);
  f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 50);
  const auto third = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 50);
  ASSERT_TRUE(f.log(third).rejected);  // before any message moved
  EXPECT_EQ(f.log(third).rejected->code, errc::overloaded);
  f.pump();
  const auto again = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  ASSERT_TRUE(f.log(again).finished);
  EXPECT_EQ(f.log(again).output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(f.router().stats().overloaded, 1u);
}

TEST(Serving, DecodeNodeDeathMidStreamRetriesWithoutLossOrDuplication) {
  fleet f;
  const auto id = f.submit("Lily and Ben", 0.8f, 0.95f, 7, 150);
  f.pump([&] { return f.log(id).positions().size() >= 20; });
  const std::string first = f.log(id).accepted->decode_node;
  f.kill(first);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0.8_p0.95_s7_n150_lily.txt")));
  // Positions arrive exactly once and in order.
  const auto& pos = f.log(id).positions();
  for (std::size_t i = 1; i < pos.size(); ++i) EXPECT_EQ(pos[i], pos[i - 1] + 1);
  EXPECT_EQ(f.router().stats().retries, 1u);
}

TEST(Serving, PrefillNodeDeathBeforeDoneRetriesOnTheOther) {
  fleet f;
  f.writer("prefill-0").hold = true;
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  f.kill("prefill-0");
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(f.decode(f.log(id).accepted->decode_node).quarantined_blocks(), 0u);
}

TEST(Serving, APrefillJobThatIsNotDeliveredIsRetriedOnTheOtherPrefill) {
  fleet f;
  f.refuse("prefill-0");
  const auto a = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  const auto b = f.submit("Lily and Ben", 0.8f, 0.95f, 7, 150);
  f.pump();
  ASSERT_TRUE(f.log(a).finished);
  ASSERT_TRUE(f.log(b).finished);
  EXPECT_EQ(f.log(a).output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(f.log(b).output(), read_text(shared_model("expected_t0.8_p0.95_s7_n150_lily.txt")));
  // The decode node sent each job itself; the one prefill-0 did not take ended its attempt.
  EXPECT_GE(f.router().stats().retries, 1u);
  EXPECT_EQ(f.prefill("prefill-0").stats().jobs, 0u);
  for (const auto* node : {"decode-0", "decode-1"}) {
    EXPECT_EQ(f.decode(node).active(), 0u) << node;
    EXPECT_EQ(f.decode(node).uncommitted_blocks(), f.decode_engine(node).pool().n_blocks()) << node;
  }
}

TEST(Serving, ShortPromptsPrefillOnTheDecodeNodeByPolicy) {
  fleet_options o;
  o.router.prefill_on_decode_max_tokens = 8;
  fleet f(o);
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).accepted->placement, "prefill-on-decode");
  EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(f.router().stats().prefill_on_decode, 1u);
  EXPECT_EQ(f.messages("prefill"), 0u);
}

TEST(Serving, NoPrefillWorkerWaitsForOneOrFallsBackAsConfigured) {
  fleet_options o;
  o.prefill_nodes = 0;
  o.router.max_wait = std::chrono::milliseconds(2000);
  {
    // Nobody comes: after max_wait, unavailable (not overloaded: nothing is throttled).
    fleet f(o);
    const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
    f.pump();
    EXPECT_FALSE(f.log(id).done());
    EXPECT_EQ(f.router().waiting(), 1u);
    f.advance(std::chrono::milliseconds(1000));
    f.add_decode(7);  // capacity that does not help: it tries again, and its wait runs on
    f.pump();
    f.advance(std::chrono::milliseconds(900));
    EXPECT_FALSE(f.log(id).done());
    f.advance(std::chrono::milliseconds(200));
    ASSERT_TRUE(f.log(id).rejected);
    EXPECT_EQ(f.log(id).rejected->code, errc::unavailable);
    EXPECT_NE(f.log(id).rejected->message.find("no prefill worker is alive"), std::string::npos)
        << f.log(id).rejected->message;
    EXPECT_EQ(f.router().waiting(), 0u);
    EXPECT_EQ(f.router().stats().unavailable, 1u);
    EXPECT_EQ(f.router().stats().waited, 1u);
  }
  {
    // One comes back within the wait: the request goes on, identical to llama2.c.
    fleet f(o);
    const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
    f.pump();
    f.advance(std::chrono::milliseconds(1500));
    f.add_prefill(0);
    f.pump();
    ASSERT_TRUE(f.log(id).finished);
    EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0_n100.txt")));
    EXPECT_EQ(f.router().stats().waited, 1u);
  }
  {
    // The queue is bounded: one request more than it holds is refused at once, overloaded.
    auto small = o;
    small.router.max_waiting = 2;
    fleet f(small);
    const auto a = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
    const auto b = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
    const auto c = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
    f.pump();
    EXPECT_FALSE(f.log(a).done());
    EXPECT_FALSE(f.log(b).done());
    ASSERT_TRUE(f.log(c).rejected);
    EXPECT_FALSE(f.log(c).accepted) << "refused at once, never accepted";
    EXPECT_EQ(f.log(c).rejected->code, errc::overloaded);
  }
  o.router.when_no_prefill = no_prefill_policy::prefill_on_decode;
  fleet f(o);
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), read_text(shared_model("expected_t0_n100.txt")));
  EXPECT_EQ(f.router().stats().no_prefill_fallback, 1u);
}

TEST(Serving, RequestDeadlineCancelsTheWorkers) {
  fleet f;
  f.writer("prefill-0").hold = true;
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 100, 500);
  f.pump();
  f.advance(std::chrono::milliseconds(501));
  f.pump();
  ASSERT_TRUE(f.log(id).rejected);
  EXPECT_EQ(f.log(id).rejected->code, errc::timed_out);
  f.writer("prefill-0").release_held();
  f.pump();
  for (const char* d : {"decode-0", "decode-1"}) EXPECT_EQ(f.decode(d).active(), 0u);
}

TEST(Serving, PlacementPrefersTheRightKindAndSpreadsLoad) {
  fleet f;
  std::set<std::string> decodes;
  std::set<std::string> prefills;
  for (int i = 0; i < 4; ++i) {
    const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 30);
    decodes.insert(f.log(id).accepted->decode_node);
    prefills.insert(f.log(id).accepted->prefill_node);
  }
  EXPECT_EQ(decodes.size(), 2u);
  EXPECT_EQ(prefills.size(), 2u);
  f.pump();
}

/// The tokens one emulated engine (no split, no router) generates after `prompt`.
std::vector<std::int32_t> emulated_reference(fleet& f, const std::string& prompt,
                                             std::size_t steps) {
  auto device = f.make_engine(0);
  auto sequence = device->add_sequence();
  EXPECT_TRUE(sequence);
  engine::sampler unused(0.0f, 0.9f, 1);
  engine::sampler* picks[] = {&unused};
  auto step = device->prefill(*sequence, f.tokenizer().encode(prompt, true, false), picks, nullptr);
  EXPECT_TRUE(step);
  std::vector<std::int32_t> tokens{step->tokens[0]};
  while (tokens.size() < steps) {
    const engine::decode_input in{*sequence, tokens.back()};
    engine::sampler* pick = &unused;
    auto next = device->decode(std::span(&in, 1), std::span(&pick, 1));
    EXPECT_TRUE(next);
    tokens.push_back(next->tokens[0]);
  }
  return tokens;
}

TEST(Serving, EmulatedDevicesServeTheTokensOfOneEmulatedEngine) {
  fleet_options o;
  o.device = "emulated:trn2";
  fleet f(o);
  const auto split = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 40);
  f.pump();
  ASSERT_TRUE(f.log(split).finished)
      << (f.log(split).rejected ? f.log(split).rejected->message : "");
  EXPECT_EQ(f.log(split).accepted->placement, "disaggregated");
  EXPECT_GT(f.prefill("prefill-0").stats().slices + f.prefill("prefill-1").stats().slices, 0u);
  ASSERT_GE(f.log(split).tokens().size(), 30u);
  const auto expected = emulated_reference(f, "Once upon a time", f.log(split).tokens().size());
  EXPECT_EQ(f.log(split).tokens(), expected);
  // The KV moved by slices is what the decode node draws from: a corrupted slice is caught.
  f.writer("prefill-0").corrupt = 0;
  f.writer("prefill-1").corrupt = 0;
  const auto again = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 40);
  f.pump();
  ASSERT_TRUE(f.log(again).finished);
  EXPECT_EQ(f.log(again).tokens(), expected);
  EXPECT_EQ(f.decode("decode-0").stats().checksum_failures +
                f.decode("decode-1").stats().checksum_failures,
            1u);
}

TEST(Serving, ModelledTimeHoldsTheOutputUntilItHasPassed) {
  fleet_options o;
  o.device = "emulated:trn2";
  o.time_scale = 1.0;
  fleet f(o);
  const auto id = f.submit("Once upon a time", 0.0f, 0.9f, std::nullopt, 8);
  f.pump();
  // The prefill device is busy for its modelled time: nothing reached the decode node.
  EXPECT_EQ(f.messages("prefillDone"), 0u);
  EXPECT_TRUE(f.log(id).tokens().empty());
  for (int ms = 0; ms < 1000 && !f.log(id).done(); ++ms) {
    f.advance(std::chrono::milliseconds(1));
    f.pump();
  }
  ASSERT_TRUE(f.log(id).finished);
  ASSERT_GE(f.log(id).tokens().size(), 3u);
  EXPECT_EQ(f.log(id).tokens(),
            emulated_reference(f, "Once upon a time", f.log(id).tokens().size()));
}

// ---- OpenAI's sampling parameters and several choices (issue 19) ---------------------

/// A request with every sampling parameter away from its default.
wire::generate_request adjusted_request(std::uint32_t n, std::uint64_t seed) {
  wire::generate_request r;
  r.prompt = "Lily and Ben";
  r.max_positions = 120;
  r.n = n;
  r.params = {0.9f, 0.95f, seed};
  r.has_seed = true;
  r.params.top_k = 50;
  r.params.min_p = 0.02f;
  r.params.frequency_penalty = 0.6f;
  r.params.presence_penalty = 0.4f;
  r.params.repetition_penalty = 1.15f;
  r.params.logit_bias = {{13, 2.5f}, {29, -100.0f}};
  r.params.min_tokens = 5;
  r.params.logprobs = true;
  r.params.top_logprobs = 3;
  return r;
}

/// The one-process output of choice `c` of `r`.
std::string reference_of(fleet& f, const wire::generate_request& r, std::uint32_t c) {
  engine::generate_options o{r.params.temperature, r.params.top_p, r.params.seed,
                             static_cast<std::int32_t>(r.max_positions)};
  o.sampling = sampling_options_of(r.params);
  o.choice = c;
  o.ignore_eos = r.params.ignore_eos;
  return f.reference(r.prompt, o);
}

TEST(Serving, PenaltiesBiasesAndCutOffsMatchTheOneProcessEngineWithLogprobs) {
  fleet f;
  const auto r = adjusted_request(1, baton::testing::test_seeds(11, 1).front());
  const auto id = f.submit(r);
  f.pump();
  ASSERT_TRUE(f.log(id).finished) << (f.log(id).rejected ? f.log(id).rejected->message : "");
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0));
  // One log-probability per token, the picked token's among them, alternatives sorted.
  const auto& c = f.log(id).choice(0);
  ASSERT_EQ(c.logprobs.size(), c.tokens.size());
  for (std::size_t i = 0; i < c.tokens.size(); ++i) {
    const auto& lp = c.logprobs[i];
    EXPECT_EQ(lp.token, static_cast<std::uint32_t>(c.tokens[i]));
    EXPECT_LE(lp.logprob, 0.0f);
    ASSERT_EQ(lp.top.size(), 3u);
    EXPECT_GE(lp.top[0].logprob, lp.top[1].logprob);
    EXPECT_LE(lp.logprob, lp.top[0].logprob);
    EXPECT_NE(lp.top[0].token, 29u) << "biased out";
  }
}

TEST(Serving, SeveralChoicesSharePromptAndEachMatchesItsOneProcessReference) {
  fleet f;
  const auto r = adjusted_request(3, baton::testing::test_seeds(5, 1).front());
  const auto id = f.submit(r);
  f.pump();
  ASSERT_TRUE(f.log(id).finished) << (f.log(id).rejected ? f.log(id).rejected->message : "");
  std::set<std::string> different;
  std::uint32_t generated = 0;
  for (std::uint32_t c = 0; c < 3; ++c) {
    EXPECT_EQ(f.log(id).output(c), reference_of(f, r, c)) << "choice " << c;
    EXPECT_TRUE(f.log(id).choice(c).finish) << "each choice says when it ended";
    different.insert(f.log(id).output(c));
    generated += static_cast<std::uint32_t>(f.log(id).choice(c).tokens.size());
  }
  EXPECT_EQ(different.size(), 3u) << "each choice has its own seed";
  EXPECT_EQ(f.log(id).finished->completion_tokens, generated);
  // The prompt was computed once, for all three.
  EXPECT_EQ(f.messages("prefill"), 1u);
  EXPECT_EQ(f.messages("admit"), 1u);
  const std::string d = f.log(id).accepted->decode_node;
  EXPECT_EQ(f.decode(d).active(), 0u);
  EXPECT_EQ(f.decode_engine(d).pool().free_blocks(), 512u) << "every shared block returned";
}

TEST(Serving, ChoiceZeroOfSeveralIsWhatARequestOfOneChoiceGives) {
  fleet f;
  auto one = adjusted_request(1, 21);
  auto three = adjusted_request(3, 21);
  const auto a = f.submit(one);
  const auto b = f.submit(three);
  f.pump();
  EXPECT_EQ(f.log(a).output(), f.log(b).output(0));
}

TEST(Serving, EveryChoiceCompletesIdenticallyWhenItsDecodeNodeDiesMidStream) {
  for (const auto seed : baton::testing::test_seeds(40, 3)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    fleet f;
    const auto r = adjusted_request(3, seed);
    const auto id = f.submit(r);
    f.pump([&] { return f.log(id).choice(2).tokens.size() >= 12; });
    ASSERT_FALSE(f.log(id).done());
    f.kill(f.log(id).accepted->decode_node);
    f.pump();
    ASSERT_TRUE(f.log(id).finished) << (f.log(id).rejected ? f.log(id).rejected->message : "");
    for (std::uint32_t c = 0; c < 3; ++c) {
      EXPECT_EQ(f.log(id).output(c), reference_of(f, r, c)) << "choice " << c;
      const auto& pos = f.log(id).choice(c).positions;
      for (std::size_t i = 1; i < pos.size(); ++i) EXPECT_EQ(pos[i], pos[i - 1] + 1);
      ASSERT_EQ(f.log(id).choice(c).logprobs.size(), f.log(id).choice(c).tokens.size());
    }
    EXPECT_EQ(f.router().stats().retries, 1u);
  }
}

/// A router dies mid-stream; the client comes back through the other router with its
/// tokens: the decode node hands the orphaned sequences over (no prefill, no admit), and
/// every choice continues exactly where the client's stream stopped.
TEST(Failover, ARouterDiesMidStreamAndTheDecodeNodeHandsItsSequencesToTheNext) {
  for (const auto seed : baton::testing::test_seeds(60, 3)) {
    SCOPED_TRACE(baton::testing::replay_hint(seed));
    fleet_options o;
    o.routers = 2;
    fleet f(o);
    const auto r = adjusted_request(3, seed);
    const auto id = f.submit(r);
    f.pump([&] { return f.log(id).choice(1).tokens.size() >= 10; });
    ASSERT_FALSE(f.log(id).done());
    const auto admits = f.messages("admit");
    f.kill("router-0");
    f.pump();  // the orphans run on to their window, and stop
    const auto resumed = f.resume(id, "router-1");
    f.pump();
    ASSERT_TRUE(f.log(resumed).finished)
        << (f.log(resumed).rejected ? f.log(resumed).rejected->message : "");
    for (std::uint32_t c = 0; c < 3; ++c) {
      EXPECT_EQ(f.combined(resumed, c), reference_of(f, r, c)) << "choice " << c;
    }
    EXPECT_EQ(f.messages("admit"), admits) << "nothing recomputed";
    EXPECT_GT(f.router("router-1").stats().claimed, 0u);
    EXPECT_EQ(f.router("router-1").stats().resumed, 1u);
    for (const auto* d : {"decode-0", "decode-1"}) {
      EXPECT_EQ(f.decode(d).active(), 0u) << d;
      EXPECT_EQ(f.decode_engine(d).pool().free_blocks(), 512u) << d;
    }
  }
}

/// Past the grace period the decode node has released the orphans: the next router places
/// the choices again from the client's tokens (a recompute), and the text is the same.
TEST(Failover, AResumeAfterTheGracePeriodRecomputesFromTheClientsTokens) {
  fleet_options o;
  o.routers = 2;
  fleet f(o);
  const auto r = adjusted_request(2, 71);
  const auto id = f.submit(r);
  f.pump([&] { return f.log(id).choice(0).tokens.size() >= 8; });
  f.kill("router-0");
  f.pump();
  f.advance(std::chrono::milliseconds(6000));  // decode_config::orphan_grace is 5 s
  for (const auto* d : {"decode-0", "decode-1"}) EXPECT_EQ(f.decode(d).orphans(), 0u) << d;
  const auto resumed = f.resume(id, "router-1");
  f.pump();
  ASSERT_TRUE(f.log(resumed).finished);
  for (std::uint32_t c = 0; c < 2; ++c) {
    EXPECT_EQ(f.combined(resumed, c), reference_of(f, r, c)) << "choice " << c;
  }
  EXPECT_EQ(f.router("router-1").stats().claimed, 0u);
}

/// The client's connection to a live router broke and it resumed elsewhere: the first
/// router's cancel (it lost its client) reaches the decode node after the claim and must
/// not end what the second router now owns.
TEST(Failover, TheFirstRoutersLateCancelDoesNotEndWhatTheSecondClaimed) {
  fleet_options o;
  o.routers = 2;
  fleet f(o);
  const auto r = adjusted_request(1, 81);
  const auto id = f.submit(r);
  f.pump([&] { return f.log(id).tokens().size() >= 6; });
  const auto resumed = f.resume(id, "router-1");
  f.pump([&] { return f.router("router-1").stats().claimed > 0; });
  f.client_gone(id, "router-0");
  f.pump();
  ASSERT_TRUE(f.log(resumed).finished);
  EXPECT_EQ(f.combined(resumed), reference_of(f, r, 0));
}

/// The only decode node dies: the request waits for one (no error), and goes on when a
/// new node joins, identical to the reference.
TEST(Failover, WithEveryDecodeNodeDeadTheRequestWaitsAndGoesOnWhenOneJoins) {
  fleet_options o;
  o.decode_nodes = 1;
  fleet f(o);
  const auto r = adjusted_request(1, 91);
  const auto id = f.submit(r);
  f.pump([&] { return f.log(id).tokens().size() >= 6; });
  f.kill("decode-0");
  f.pump();
  EXPECT_FALSE(f.log(id).done());
  EXPECT_EQ(f.router().waiting(), 1u);
  f.advance(std::chrono::milliseconds(800));
  f.add_decode(1);
  f.pump();
  ASSERT_TRUE(f.log(id).finished) << (f.log(id).rejected ? f.log(id).rejected->message : "");
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0));
  EXPECT_EQ(f.router().stats().migrations[static_cast<std::size_t>(migration_cause::node_death)],
            1u);
}

/// A decode node cut off long enough for its router to declare it dead (while it saw
/// nobody die) comes back: the router tells it to end what it moved elsewhere, instead of
/// the node holding those blocks for ever.
TEST(Failover, ADecodeNodeDeclaredDeadThatComesBackLetsGoOfWhatItsRouterMoved) {
  fleet f;
  const auto r = adjusted_request(1, 101);
  const auto id = f.submit(r);
  f.pump([&] { return f.log(id).tokens().size() >= 6; });
  const std::string cut = f.log(id).accepted->decode_node;
  f.cut(cut, true);
  f.declare_gone(cut);
  f.pump();
  ASSERT_TRUE(f.log(id).finished) << "moved to the other decode node";
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0));
  EXPECT_GT(f.decode(cut).active(), 0u) << "the cut-off node still runs it";
  f.cut(cut, false);
  f.rejoin(cut);
  f.pump();
  EXPECT_EQ(f.decode(cut).active(), 0u);
  EXPECT_EQ(f.decode_engine(cut).pool().free_blocks(), 512u);
}

/// An admit queued for a decode node that is cut off, declared dead and taken back arrives
/// over its old connection after everything its router sent since (the cancel that ends
/// what the router moved among it): the attempt it starts streams to a router that moved
/// it elsewhere, which ends it, and no block stays held.
TEST(Failover, AnAdmitThatArrivesAfterItsAttemptMovedIsEndedByItsRouter) {
  fleet f;
  const auto r = adjusted_request(1, 121);
  const auto id = f.submit(r);
  ASSERT_TRUE(f.log(id).accepted);
  const std::string cut = f.log(id).accepted->decode_node;
  f.cut(cut, true);  // the admit waits on the link
  f.declare_gone(cut);
  f.pump();
  ASSERT_TRUE(f.log(id).finished) << "moved to the other decode node";
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0));
  f.cut(cut, false);
  f.rejoin(cut);
  f.pump();
  EXPECT_GE(f.messages("admit"), 2u) << "the old connection delivered the first admit";
  EXPECT_EQ(f.decode(cut).active(), 0u);
  EXPECT_EQ(f.decode_engine(cut).pool().free_blocks(), 512u);
  EXPECT_EQ(f.log(id).ends, 1u);
}

/// A connection reset loses what it carried, and nobody is told. A lost admit: the router
/// hears nothing of the attempt for silence_timeout and places it again; a client that
/// reads slowly keeps its decode node waiting at the window as long as it likes.
TEST(Failover, AnAdmitLostWithoutAWordIsPlacedAgainAfterTheSilence) {
  fleet f;
  const auto r = adjusted_request(1, 131);
  const auto id = f.submit(r);
  ASSERT_TRUE(f.log(id).accepted);
  f.lose("router-0", f.log(id).accepted->decode_node);
  f.pump();
  EXPECT_FALSE(f.log(id).done());
  f.advance(std::chrono::milliseconds(15'001));
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0));
  EXPECT_EQ(f.router().stats().migrations[static_cast<std::size_t>(migration_cause::lost)], 1u);
  // A slow client: its decode node waits at the window, silent and not lost.
  const auto slow_request = adjusted_request(1, 132);
  const auto slow = f.submit(slow_request);
  f.slow_client(slow, true);
  f.pump();
  EXPECT_FALSE(f.log(slow).done());
  f.advance(std::chrono::milliseconds(12'000));
  f.advance(std::chrono::milliseconds(12'000));  // twice the silence, inside the deadline
  f.pump();
  EXPECT_EQ(f.router().stats().migrations[static_cast<std::size_t>(migration_cause::lost)], 1u);
  f.slow_client(slow, false);
  f.pump();
  ASSERT_TRUE(f.log(slow).finished);
  EXPECT_EQ(f.log(slow).output(), reference_of(f, slow_request, 0));
  EXPECT_EQ(f.router().stats().migrations[static_cast<std::size_t>(migration_cause::lost)], 1u);
}

/// A worker that cannot be reached, and is not declared dead yet (its actor restarts, or
/// membership has not concluded), gets no new attempt for unreachable_backoff: the
/// request waits instead of bouncing off it as fast as the network answers.
TEST(Failover, AnUnreachableWorkerIsBackedOffNotRetriedAtOnce) {
  fleet_options o;
  o.decode_nodes = 1;
  fleet f(o);
  f.refuse("decode-0");
  const auto r = adjusted_request(1, 151);
  const auto id = f.submit(r);
  f.pump();
  const auto moves = f.router().stats().retries;
  EXPECT_LE(moves, 1u) << "placed once, then it waits for the backoff";
  EXPECT_FALSE(f.log(id).done());
  f.advance(std::chrono::milliseconds(101));  // the backoff ends: it tries once more
  f.pump();
  EXPECT_LE(f.router().stats().retries, moves + 1);
  f.accept("decode-0");
  f.advance(std::chrono::milliseconds(101));
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0));
}

/// Token batches travel in order on one connection: a batch whose first position is past
/// the next expected one means the batches between were lost with a reset connection. The
/// attempt moves at once (from the tokens delivered), rather than waiting for them.
TEST(Failover, ATokenGapMovesTheAttemptAtOnce) {
  fleet f;
  const auto r = adjusted_request(1, 141);
  const auto id = f.submit(r);
  f.pump([&] { return f.log(id).tokens().size() >= 6; });
  const auto& accepted = *f.log(id).accepted;
  const auto next = static_cast<std::uint32_t>(accepted.prompt_tokens + f.log(id).tokens().size());
  wire::token_batch late;  // what the decode node sends after a lost batch
  late.request = id;
  late.attempt = 1;
  late.first_position = next + 3;
  late.tokens = {1, 2};
  f.dispatch("router-0",
             f.router().on_tokens({accepted.decode_node, "decode"}, late, true, f.now()));
  EXPECT_EQ(f.router().stats().migrations[static_cast<std::size_t>(migration_cause::lost)], 1u);
  f.pump();
  ASSERT_TRUE(f.log(id).finished);
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0)) << "nothing skipped, nothing repeated";
}

/// A router cut off long enough for the workers to declare it dead (while it saw nobody
/// die) comes back: it learns it was buried and places its requests again at once, rather
/// than waiting for tokens that will never come until their deadline.
TEST(Failover, ARouterDeclaredDeadThatComesBackPlacesItsRequestsAgain) {
  fleet f;
  const auto r = adjusted_request(1, 111);
  const auto id = f.submit(r);
  f.pump([&] { return f.log(id).tokens().size() >= 6; });
  f.cut("router-0", true);
  f.declare_gone("router-0");
  f.pump();
  EXPECT_FALSE(f.log(id).done());
  f.cut("router-0", false);
  f.rejoin("router-0");
  f.buried("router-0");
  f.pump();
  ASSERT_TRUE(f.log(id).finished) << (f.log(id).rejected ? f.log(id).rejected->message : "");
  EXPECT_EQ(f.log(id).output(), reference_of(f, r, 0));
  EXPECT_GE(f.router().stats().retries, 1u);
}

TEST(Serving, IgnoreEosGoesOnPastTheEndOfText) {
  fleet f;
  wire::generate_request r;
  r.prompt = "Once upon a time";
  r.max_positions = 256;
  r.params = {1.0f, 1.0f, 0};
  r.has_seed = true;
  // The first seed whose story ends before 256 positions (stories260K ends most).
  wire::request_id plain{};
  for (std::uint64_t seed = 1; seed < 50; ++seed) {
    r.params.seed = seed;
    plain = f.submit(r);
    f.pump();
    ASSERT_TRUE(f.log(plain).finished);
    if (f.log(plain).finished->reason == wire::finish_reason::end_of_text) break;
  }
  ASSERT_EQ(f.log(plain).finished->reason, wire::finish_reason::end_of_text);
  r.params.ignore_eos = true;
  const auto on = f.submit(r);
  f.pump();
  ASSERT_TRUE(f.log(on).finished);
  EXPECT_EQ(f.log(on).finished->reason, wire::finish_reason::length);
  EXPECT_GT(f.log(on).tokens().size(), f.log(plain).tokens().size());
  EXPECT_TRUE(std::find(f.log(on).tokens().begin(), f.log(on).tokens().end(),
                        engine::tokenizer::bos) != f.log(on).tokens().end())
      << "the end-of-text token is streamed like any other";
  engine::generate_options o{1.0f, 1.0f, r.params.seed, 256};
  o.ignore_eos = true;
  EXPECT_EQ(f.log(on).output(), f.reference(r.prompt, o));
}

}  // namespace
}  // namespace baton::actors::testing
