#include "engine/generate.hpp"

#include <algorithm>
#include <fstream>
#include <iterator>

#include <gtest/gtest.h>

#include "engine/sampler.hpp"
#include "tests/unit/engine/test_models.hpp"

namespace baton::engine {
namespace {

using testing::shared_model;

std::string read_text(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

class Generate : public ::testing::TestWithParam<kernel_path> {
 protected:
  void SetUp() override {
    if (!supported(GetParam())) GTEST_SKIP() << "kernel path not supported here";
  }
  std::string run(std::string_view prompt, const generate_options& options,
                  std::size_t threads = 2) {
    auto m = model::load(shared_model("stories260K.bin"));
    EXPECT_TRUE(m) << m.error().to_string();
    auto tok = tokenizer::load(shared_model("tok512.bin"), m->config().vocab_size);
    EXPECT_TRUE(tok) << tok.error().to_string();
    engine_options eo;
    eo.threads = threads;
    eo.max_sequences = 1;
    eo.kernel = GetParam();
    auto e = cpu_engine::create(*m, eo);
    EXPECT_TRUE(e) << e.error().to_string();
    auto text = generate_text(**e, *tok, prompt, options);
    EXPECT_TRUE(text) << text.error().to_string();
    return *text;
  }
};

TEST_P(Generate, GreedyMatchesLlama2c) {
  generate_options options;
  options.temperature = 0.0f;
  options.steps = 100;
  EXPECT_EQ(run("Once upon a time", options), read_text(shared_model("expected_t0_n100.txt")));
}

TEST_P(Generate, SeededSamplingMatchesLlama2c) {
  generate_options options;
  options.temperature = 0.8f;
  options.top_p = 0.95f;
  options.seed = 7;
  options.steps = 150;
  const std::string expected_text = read_text(shared_model("expected_t0.8_p0.95_s7_n150_lily.txt"));
  EXPECT_EQ(run("Lily and Ben", options, 1), expected_text);
  EXPECT_EQ(run("Lily and Ben", options, 2), expected_text);
}

TEST_P(Generate, StepsShorterThanPromptOnlyEchoes) {
  generate_options options;
  options.temperature = 0.0f;
  options.steps = 3;
  EXPECT_EQ(run("Once upon a time", options), "Once upon a\n");  // positions 0..2 echo 3 pieces
}

TEST_P(Generate, ResumesAnywhereOnAFreshEngine) {
  // A generation resumed at sampled token k on another engine, from the prompt plus the
  // first k tokens and a sampler rebuilt from (seed, k), continues with the same tokens.
  auto m = model::load(shared_model("stories260K.bin"));
  ASSERT_TRUE(m);
  auto tok = tokenizer::load(shared_model("tok512.bin"), m->config().vocab_size);
  ASSERT_TRUE(tok);
  engine_options eo;
  eo.kernel = GetParam();
  auto first = cpu_engine::create(*m, eo);
  ASSERT_TRUE(first);
  generate_options options;
  options.temperature = 0.8f;
  options.top_p = 0.95f;
  options.seed = 7;
  options.steps = 150;
  auto full = generate(**first, *tok, "Lily and Ben", options, [](std::string_view) {});
  ASSERT_TRUE(full);
  ASSERT_GT(full->generated.size(), 120U);
  for (const std::size_t k : {0U, 1U, 57U, 120U}) {
    eo.threads = 1;
    auto second = cpu_engine::create(*m, eo);
    ASSERT_TRUE(second);
    auto id = (*second)->add_sequence();
    ASSERT_TRUE(id);
    std::vector<std::int32_t> history = full->prompt_tokens;
    history.insert(history.end(), full->generated.begin(),
                   full->generated.begin() + static_cast<std::ptrdiff_t>(k));
    auto logits = (*second)->prefill(*id, history);
    ASSERT_TRUE(logits);
    sampler resumed = sampler::at(options.temperature, options.top_p, options.seed, k);
    for (std::size_t i = k; i < std::min(k + 20, full->generated.size()); ++i) {
      std::vector<float> scratch(logits->begin(), logits->end());
      const std::int32_t next = resumed.sample(scratch);
      ASSERT_EQ(next, full->generated[i]) << "resumed at " << k << ", token " << i;
      const decode_input step{*id, next};
      logits = (*second)->decode(std::span(&step, 1));
      ASSERT_TRUE(logits);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, Generate,
                         ::testing::Values(kernel_path::scalar, kernel_path::avx2,
                                           kernel_path::avx512),
                         testing::kernel_test_name);

}  // namespace
}  // namespace baton::engine
