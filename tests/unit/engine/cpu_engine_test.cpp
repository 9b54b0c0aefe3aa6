#include "engine/cpu_engine.hpp"

#include <cstring>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/engine/test_models.hpp"

namespace baton::engine {
namespace {

std::vector<kernel_path> supported_paths() {
  std::vector<kernel_path> paths;
  for (auto p : {kernel_path::scalar, kernel_path::avx2, kernel_path::avx512}) {
    if (supported(p)) paths.push_back(p);
  }
  return paths;
}

std::vector<std::int32_t> prompt(std::size_t length, std::int32_t salt) {
  std::vector<std::int32_t> tokens{1};
  for (std::size_t i = 1; i < length; ++i) {
    tokens.push_back(
        static_cast<std::int32_t>((i * 31 + static_cast<std::size_t>(salt) * 7) % 299) + 1);
  }
  return tokens;
}

std::vector<float> copy(expected<std::span<const float>> logits) {
  EXPECT_TRUE(logits) << logits.error().to_string();
  return {logits->begin(), logits->end()};
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

class CpuEngine : public ::testing::TestWithParam<kernel_path> {
 protected:
  static void SetUpTestSuite() {
    model_.emplace(testing::synthetic_model(testing::small_config(), 11, "engine.bin"));
  }
  static void TearDownTestSuite() { model_.reset(); }

  std::unique_ptr<cpu_engine> make(std::size_t threads, std::size_t max_batch_tokens = 256) {
    engine_options options;
    options.threads = threads;
    options.block_tokens = 4;
    options.max_sequences = 8;
    options.max_batch_tokens = max_batch_tokens;
    options.kernel = GetParam();
    options.min_parallel_work = 0;  // split every step, however small
    auto e = cpu_engine::create(*model_, options);
    EXPECT_TRUE(e) << e.error().to_string();
    return std::move(*e);
  }

  /// Logits after each position of `tokens`, computed one decode step at a time.
  std::vector<std::vector<float>> stepwise(cpu_engine& e, const std::vector<std::int32_t>& tokens) {
    auto id = e.add_sequence();
    EXPECT_TRUE(id);
    std::vector<std::vector<float>> out;
    out.push_back(copy(e.prefill(*id, std::span(tokens).first(1))));
    for (std::size_t i = 1; i < tokens.size(); ++i) {
      const decode_input step{*id, tokens[i]};
      out.push_back(copy(e.decode(std::span(&step, 1))));
    }
    return out;
  }

  static std::optional<model> model_;
};

std::optional<model> CpuEngine::model_;

TEST_P(CpuEngine, PrefillMatchesTokenByTokenDecode) {
  auto a = make(2);
  auto b = make(2);
  const auto tokens = prompt(23, 1);
  auto id = a->add_sequence();
  ASSERT_TRUE(id);
  const auto prefilled = copy(a->prefill(*id, tokens));
  const auto steps = stepwise(*b, tokens);
  EXPECT_TRUE(same_bits(prefilled, steps.back()));
  // The next decode step after a prefill matches too, so the KV caches agree.
  const decode_input next_a{*id, 5};
  const decode_input next_b{static_cast<sequence_id>(0), 5};
  EXPECT_TRUE(
      same_bits(copy(a->decode(std::span(&next_a, 1))), copy(b->decode(std::span(&next_b, 1)))));
}

TEST_P(CpuEngine, ChunkingDoesNotChangeLogits) {
  const auto tokens = prompt(30, 2);
  auto whole = make(2);
  auto id = whole->add_sequence();
  const auto expected_logits = copy(whole->prefill(*id, tokens));
  for (const std::size_t chunk : {1U, 3U, 4U, 7U, 16U}) {
    auto e = make(2, chunk == 7 ? 5 : 256);  // also split inside the engine
    auto seq = e->add_sequence();
    std::vector<float> last;
    for (std::size_t begin = 0; begin < tokens.size(); begin += chunk) {
      const std::size_t count = std::min(chunk, tokens.size() - begin);
      last = copy(e->prefill(*seq, std::span(tokens).subspan(begin, count)));
    }
    EXPECT_TRUE(same_bits(last, expected_logits)) << "chunk " << chunk;
    ASSERT_EQ(e->blocks(*seq).size(), whole->blocks(*id).size());
    for (std::size_t b = 0; b < e->blocks(*seq).size(); ++b) {
      for (std::size_t layer = 0; layer < 2; ++layer) {
        const auto x = e->pool().slice(e->blocks(*seq)[b], layer);
        const auto y = whole->pool().slice(whole->blocks(*id)[b], layer);
        EXPECT_EQ(std::memcmp(x.data(), y.data(), x.size_bytes()), 0) << "block " << b;
      }
    }
  }
}

TEST_P(CpuEngine, BlockSizeDoesNotChangeLogits) {
  const auto tokens = prompt(37, 8);
  std::vector<float> reference;
  for (const std::size_t block_tokens : {1U, 4U, 16U, 64U}) {
    engine_options options;
    options.block_tokens = block_tokens;
    options.max_sequences = 1;
    options.kernel = GetParam();
    auto e = cpu_engine::create(*model_, options);
    ASSERT_TRUE(e) << e.error().to_string();
    auto id = (*e)->add_sequence();
    ASSERT_TRUE(id);
    ASSERT_TRUE((*e)->prefill(*id, std::span(tokens).first(30)));
    const decode_input step{*id, tokens[30]};
    auto logits = copy((*e)->decode(std::span(&step, 1)));
    if (reference.empty()) reference = logits;
    EXPECT_TRUE(same_bits(logits, reference)) << "block_tokens " << block_tokens;
  }
}

TEST_P(CpuEngine, ThreadCountDoesNotChangeLogits) {
  const auto tokens = prompt(40, 3);
  auto one = make(1);
  auto two = make(2);
  auto three = make(3);
  const auto a = stepwise(*one, tokens);
  const auto b = stepwise(*two, tokens);
  const auto c = stepwise(*three, tokens);
  for (std::size_t i = 0; i < a.size(); ++i) {
    EXPECT_TRUE(same_bits(a[i], b[i])) << "position " << i;
    EXPECT_TRUE(same_bits(a[i], c[i])) << "position " << i;
  }
  auto id1 = one->add_sequence();
  auto id2 = two->add_sequence();
  EXPECT_TRUE(same_bits(copy(one->prefill(*id1, tokens)), copy(two->prefill(*id2, tokens))));
}

TEST_P(CpuEngine, BatchNeighboursDoNotChangeLogits) {
  const auto tokens = prompt(20, 4);
  auto alone = make(2);
  const auto expected_steps = stepwise(*alone, tokens);

  // The same sequence decoded among neighbours that join and leave between steps.
  auto e = make(2, 3);
  auto target = e->add_sequence();
  ASSERT_TRUE(target);
  auto first = copy(e->prefill(*target, std::span(tokens).first(1)));
  EXPECT_TRUE(same_bits(first, expected_steps[0]));
  std::vector<sequence_id> neighbours;
  const auto vocab = static_cast<std::size_t>(testing::small_config().vocab_size);
  for (std::size_t i = 1; i < tokens.size(); ++i) {
    if (i % 3 == 1 && neighbours.size() < 5) {  // a neighbour joins with its own prompt
      auto n = e->add_sequence();
      ASSERT_TRUE(n);
      ASSERT_TRUE(e->prefill(*n, prompt(2 + i, static_cast<std::int32_t>(i))));
      neighbours.push_back(*n);
    }
    if (i % 5 == 0 && !neighbours.empty()) {  // and one leaves
      e->remove_sequence(neighbours.front());
      neighbours.erase(neighbours.begin());
    }
    std::vector<decode_input> batch;
    const std::size_t place = i % (neighbours.size() + 1);  // the target moves around
    for (const auto n : neighbours) batch.push_back({n, static_cast<std::int32_t>(i + 7)});
    batch.insert(batch.begin() + static_cast<std::ptrdiff_t>(place), {*target, tokens[i]});
    const auto all = copy(e->decode(batch));
    const std::vector<float> mine(all.begin() + static_cast<std::ptrdiff_t>(place * vocab),
                                  all.begin() + static_cast<std::ptrdiff_t>((place + 1) * vocab));
    EXPECT_TRUE(same_bits(mine, expected_steps[i])) << "step " << i;
  }
}

TEST_P(CpuEngine, RejectsBadInputWithoutSideEffects) {
  auto e = make(1);
  auto id = e->add_sequence();
  const std::int32_t bad[] = {1, 300};
  auto r = e->prefill(*id, bad);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::invalid_argument);
  EXPECT_EQ(e->length(*id), 0U);
  const auto too_long = prompt(65, 5);
  r = e->prefill(*id, too_long);
  ASSERT_FALSE(r);
  EXPECT_EQ(e->length(*id), 0U);
  const decode_input twice[] = {{*id, 3}, {*id, 4}};
  EXPECT_FALSE(e->decode(twice));
}

TEST_P(CpuEngine, RunsOutOfBlocksCleanly) {
  engine_options options;
  options.threads = 1;
  options.block_tokens = 4;
  options.kv_blocks = 3;
  options.kernel = GetParam();
  auto e = cpu_engine::create(*model_, options);
  ASSERT_TRUE(e);
  auto id = (*e)->add_sequence();
  ASSERT_TRUE((*e)->prefill(*id, prompt(12, 6)));
  EXPECT_EQ((*e)->pool().free_blocks(), 0U);
  const decode_input step{*id, 3};
  auto r = (*e)->decode(std::span(&step, 1));
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code, errc::overloaded);
  (*e)->remove_sequence(*id);
  EXPECT_EQ((*e)->pool().free_blocks(), 3U);
}

INSTANTIATE_TEST_SUITE_P(Paths, CpuEngine, ::testing::ValuesIn(supported_paths()),
                         testing::kernel_test_name);

TEST(CpuEngineFingerprint, NamesVersionAndKernel) {
  const model m = testing::synthetic_model(testing::small_config(), 1, "fp.bin");
  engine_options options;
  options.kernel = kernel_path::scalar;
  auto e = cpu_engine::create(m, options);
  ASSERT_TRUE(e);
  EXPECT_EQ((*e)->fingerprint(), std::string(engine_version) + " kernel=scalar");
}

}  // namespace
}  // namespace baton::engine
