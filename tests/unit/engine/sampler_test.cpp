#include "engine/sampler.hpp"

#include <cmath>
#include <limits>
#include <map>
#include <set>
#include <tuple>
#include <vector>

#include <gtest/gtest.h>

namespace baton::engine {
namespace {

std::vector<float> test_logits() {
  std::vector<float> logits(64);
  for (std::size_t i = 0; i < logits.size(); ++i) {
    logits[i] = static_cast<float>((i * 37) % 23) * 0.25f;
  }
  return logits;
}

TEST(Sampler, XorshiftMatchesLlama2c) {
  // llama2.c's random_u32 from state 7, computed by hand from its definition.
  std::uint64_t state = 7;
  std::uint64_t s = 7;
  s ^= s >> 12;
  s ^= s << 25;
  s ^= s >> 27;
  EXPECT_EQ(xorshift_u32(state), static_cast<std::uint32_t>((s * 0x2545F4914F6CDD1DULL) >> 32));
  EXPECT_EQ(state, s);
  const float coin = xorshift_f32(state);
  EXPECT_GE(coin, 0.0f);
  EXPECT_LT(coin, 1.0f);
}

TEST(Sampler, GreedyTakesFirstArgmaxAndDrawsNothing) {
  sampler greedy(0.0f, 0.9f, 42);
  std::vector<float> logits{0.5f, 2.0f, 2.0f, -1.0f};
  EXPECT_EQ(greedy.sample(logits), 1);
  EXPECT_EQ(greedy.state(), 42U);
  EXPECT_EQ(greedy.sampled(), 1U);
}

TEST(Sampler, ResumedSamplerContinuesIdentically) {
  for (const float top_p : {0.0f, 0.9f}) {
    sampler full(0.8f, top_p, 7);
    std::vector<std::int32_t> picks;
    for (int k = 0; k < 40; ++k) {
      auto logits = test_logits();
      logits[static_cast<std::size_t>(k) % 64] += 1.0f;
      picks.push_back(full.sample(logits));
    }
    for (const std::uint64_t resume_at : {0U, 1U, 17U, 39U}) {
      sampler resumed = sampler::at(0.8f, top_p, 7, resume_at);
      for (std::uint64_t k = resume_at; k < 40; ++k) {
        auto logits = test_logits();
        logits[k % 64] += 1.0f;
        EXPECT_EQ(resumed.sample(logits), picks[k]) << "k=" << k << " top_p=" << top_p;
      }
      EXPECT_EQ(resumed.state(), full.state());
    }
  }
}

TEST(Sampler, TopPKeepsOnlyTheNucleus) {
  // One token holds almost all the mass: top-p 0.5 must always pick it.
  sampler s(1.0f, 0.5f, 3);
  for (int i = 0; i < 100; ++i) {
    std::vector<float> logits(32, 0.0f);
    logits[9] = 20.0f;
    EXPECT_EQ(s.sample(logits), 9);
  }
  EXPECT_EQ(s.sampled(), 100U);
}

TEST(Sampler, SeedsChangeTheDraws) {
  int differences = 0;
  sampler a(1.0f, 0.0f, 1);
  sampler b(1.0f, 0.0f, 2);
  for (int i = 0; i < 50; ++i) {
    std::vector<float> la(16, 0.0f);
    std::vector<float> lb(16, 0.0f);
    differences += a.sample(la) != b.sample(lb) ? 1 : 0;
  }
  EXPECT_GT(differences, 0);
}

// ---- OpenAI's and vLLM's parameters, against a reference written here -----------------

/// What sampler::sample does to the logits before the temperature, written out plainly.
std::vector<float> reference_adjusted(std::vector<float> l, const sampling_options& o,
                                      const std::vector<std::int32_t>& prompt,
                                      const std::vector<std::int32_t>& generated) {
  for (const auto& [t, b] : o.logit_bias) l[static_cast<std::size_t>(t)] += b;
  if (generated.size() < o.min_tokens) {
    l[static_cast<std::size_t>(o.end_token)] = -std::numeric_limits<float>::infinity();
  }
  std::set<std::int32_t> seen(prompt.begin(), prompt.end());
  seen.insert(generated.begin(), generated.end());
  if (o.repetition_penalty != 1.0f) {
    for (const auto t : seen) {
      float& v = l[static_cast<std::size_t>(t)];
      v = v > 0 ? v / o.repetition_penalty : v * o.repetition_penalty;
    }
  }
  std::map<std::int32_t, int> counts;
  for (const auto t : generated) ++counts[t];
  for (const auto& [t, c] : counts) {
    l[static_cast<std::size_t>(t)] -=
        static_cast<float>(c) * o.frequency_penalty + o.presence_penalty;
  }
  return l;
}

/// The token a coin picks among the probabilities `p` after min-p, top-k and top-p.
std::int32_t reference_pick(const std::vector<float>& p, const sampling_options& o, float coin) {
  const float floor = o.min_p * *std::max_element(p.begin(), p.end());
  std::vector<std::pair<float, std::int32_t>> kept;
  for (std::size_t i = 0; i < p.size(); ++i) {
    if (p[i] >= floor && p[i] > 0) kept.emplace_back(p[i], static_cast<std::int32_t>(i));
  }
  std::stable_sort(kept.begin(), kept.end(), [](auto& a, auto& b) { return a.first > b.first; });
  if (o.top_k > 0 && kept.size() > o.top_k) kept.resize(o.top_k);
  float total = 0;
  std::size_t last = kept.size() - 1;
  for (std::size_t i = 0; i < kept.size(); ++i) {
    total += kept[i].first;
    if (o.top_p < 1 && total > o.top_p) {
      last = i;
      break;
    }
  }
  float cdf = 0;
  for (std::size_t i = 0; i <= last; ++i) {
    cdf += kept[i].first;
    if (coin * total < cdf) return kept[i].second;
  }
  return kept[last].second;
}

std::vector<float> tiny_logits() {
  return {1.0f, -0.5f, 2.0f, 0.25f, -2.0f, 1.5f, 0.0f, 0.75f};
}

TEST(Sampler, EveryDefaultKeepsLlama2csPicks) {
  for (const float top_p : {0.0f, 0.9f, 1.0f}) {
    sampler plain(0.8f, top_p, 11);
    sampler options(sampling_options{.temperature = 0.8f, .top_p = top_p}, 11);
    for (int k = 0; k < 200; ++k) {
      auto a = test_logits();
      a[static_cast<std::size_t>(k) % 64] += 1.5f;
      auto b = a;
      ASSERT_EQ(plain.sample(a), options.sample(b)) << "k=" << k;
    }
    EXPECT_EQ(plain.state(), options.state());
  }
}

TEST(Sampler, PenaltiesAndBiasesChangeTheLogitsAsDefined) {
  const std::vector<std::int32_t> prompt = {0, 3};
  const std::vector<std::int32_t> generated = {2, 5, 2, 7};
  sampling_options o;
  o.logit_bias = {{4, 3.0f}, {6, -100.0f}};
  o.repetition_penalty = 1.3f;
  o.frequency_penalty = 0.5f;
  o.presence_penalty = 0.25f;
  o.logprobs = true;
  o.top_logprobs = 8;
  sampler s(o, 5, prompt, generated);
  auto logits = tiny_logits();
  const std::int32_t token = s.sample(logits);
  const auto expected = reference_adjusted(tiny_logits(), o, prompt, generated);
  EXPECT_EQ(token, static_cast<std::int32_t>(std::max_element(expected.begin(), expected.end()) -
                                             expected.begin()));
  ASSERT_TRUE(s.last_logprobs());
  const auto& lp = *s.last_logprobs();
  ASSERT_EQ(lp.top.size(), 8u);
  // Log-probabilities differ exactly as the adjusted logits do, and sum to one.
  double total = 0;
  for (const auto& [t, v] : lp.top) {
    total += std::exp(static_cast<double>(v));
    EXPECT_NEAR(
        v - lp.top[0].second,
        expected[static_cast<std::size_t>(t)] - expected[static_cast<std::size_t>(lp.top[0].first)],
        1e-5)
        << "token " << t;
  }
  EXPECT_NEAR(total, 1.0, 1e-6);
  EXPECT_EQ(lp.top[0].first, token);
  EXPECT_FLOAT_EQ(lp.logprob, lp.top[0].second);
}

TEST(Sampler, MinTokensBansTheEndTokenUntilEnough) {
  sampling_options o;
  o.min_tokens = 2;
  o.end_token = 2;  // the argmax of tiny_logits()
  sampler s(o, 1);
  auto l1 = tiny_logits();
  EXPECT_EQ(s.sample(l1), 5);  // the next best
  auto l2 = tiny_logits();
  EXPECT_EQ(s.sample(l2), 5);
  auto l3 = tiny_logits();
  EXPECT_EQ(s.sample(l3), 2) << "two tokens generated: the end token is allowed again";
}

TEST(Sampler, TopKAndMinPCutOffsMatchTheReference) {
  for (const auto& [top_k, min_p, top_p] : std::vector<std::tuple<std::uint32_t, float, float>>{
           {1, 0.0f, 1.0f}, {3, 0.0f, 1.0f}, {0, 0.3f, 1.0f}, {4, 0.1f, 0.8f}, {8, 0.0f, 0.5f}}) {
    sampling_options o{.temperature = 0.7f, .top_p = top_p, .top_k = top_k, .min_p = min_p};
    sampler s(o, 99);
    std::uint64_t coins = 99;
    for (int k = 0; k < 300; ++k) {
      auto logits = tiny_logits();
      logits[static_cast<std::size_t>(k) % 8] += 0.5f;
      std::vector<float> p = logits;
      for (auto& v : p) v /= o.temperature;
      const float m = *std::max_element(p.begin(), p.end());
      float sum = 0;
      for (auto& v : p) sum += (v = std::exp(v - m));
      for (auto& v : p) v /= sum;
      const float coin = xorshift_f32(coins);
      ASSERT_EQ(s.sample(logits), reference_pick(p, o, coin))
          << "k=" << k << " top_k=" << top_k << " min_p=" << min_p << " top_p=" << top_p;
    }
  }
}

TEST(Sampler, AResumedSamplerWithPenaltiesContinuesIdentically) {
  sampling_options o{.temperature = 0.9f, .top_p = 0.95f, .top_k = 40};
  o.frequency_penalty = 0.7f;
  o.presence_penalty = 0.3f;
  o.repetition_penalty = 1.2f;
  o.logit_bias = {{5, 2.0f}};
  const std::vector<std::int32_t> prompt = {1, 7, 9};
  sampler full(o, 21, prompt);
  std::vector<std::int32_t> picks;
  for (int k = 0; k < 60; ++k) {
    auto logits = test_logits();
    picks.push_back(full.sample(logits));
  }
  for (const std::size_t resume_at : {0u, 1u, 30u, 59u}) {
    sampler resumed(o, 21, prompt, std::span(picks).first(resume_at));
    for (std::size_t k = resume_at; k < picks.size(); ++k) {
      auto logits = test_logits();
      ASSERT_EQ(resumed.sample(logits), picks[k]) << "resumed at " << resume_at << ", k=" << k;
    }
  }
}

TEST(Sampler, ChoiceSeedsKeepChoiceZeroAndDifferOtherwise) {
  EXPECT_EQ(choice_seed(42, 0), 42u);
  EXPECT_NE(choice_seed(42, 1), 42u);
  EXPECT_NE(choice_seed(42, 1), choice_seed(42, 2));
  EXPECT_NE(choice_seed(0, 1), 0u);
  EXPECT_EQ(choice_seed(42, 3), choice_seed(42, 3));
}

}  // namespace
}  // namespace baton::engine
