#include "engine/sampler.hpp"

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

}  // namespace
}  // namespace baton::engine
