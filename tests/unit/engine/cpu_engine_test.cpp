#include "engine/cpu_engine.hpp"

#include <algorithm>
#include <cstring>
#include <map>
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

/// One on_layer call of prefill.
struct layer_call {
  std::size_t layer, first, end;
  bool operator==(const layer_call&) const = default;
};

/// Keys and values of `position` in `layer` of the sequence, as stored in the pool.
std::vector<float> kv_at(const cpu_engine& e, sequence_id id, std::size_t layer,
                         std::size_t position) {
  const kv_layout& l = e.pool().layout();
  const auto slice = e.pool().slice(e.blocks(id)[position / l.block_tokens], layer);
  const std::size_t slot = position % l.block_tokens;
  std::vector<float> out;
  for (std::size_t part = 0; part < 2; ++part) {  // keys, then values
    for (std::size_t h = 0; h < l.kv_dim / l.head_size; ++h) {
      const float* at = slice.data() + part * l.block_tokens * l.kv_dim +
                        (h * l.block_tokens + slot) * l.head_size;
      out.insert(out.end(), at, at + l.head_size);
    }
  }
  return out;
}

TEST_P(CpuEngine, PrefillHookReportsEveryLayerOfEveryChunkInOrder) {
  const auto tokens = prompt(13, 9);
  auto plain = make(2, 5);
  auto hooked = make(2, 5);  // chunks [0,5) [5,10) [10,13)
  auto a = plain->add_sequence();
  auto b = hooked->add_sequence();
  ASSERT_TRUE(plain->prefill(*a, std::span(tokens).first(2)));
  ASSERT_TRUE(hooked->prefill(*b, std::span(tokens).first(2)));
  std::vector<layer_call> calls;
  const auto rest = std::span(tokens).subspan(2);
  const auto with_hook =
      copy(hooked->prefill(*b, rest, [&](std::size_t l, std::size_t f, std::size_t e) {
        calls.push_back({l, f, e});
      }));
  EXPECT_TRUE(same_bits(with_hook, copy(plain->prefill(*a, rest))));
  const std::vector<layer_call> expected_calls = {{0, 2, 7},  {1, 2, 7},   {0, 7, 12},
                                                  {1, 7, 12}, {0, 12, 13}, {1, 12, 13}};
  EXPECT_EQ(calls, expected_calls);

  // A failing prefill reports nothing.
  calls.clear();
  const std::int32_t bad[] = {1, 300};
  EXPECT_FALSE(hooked->prefill(*b, bad, [&](std::size_t l, std::size_t f, std::size_t e) {
    calls.push_back({l, f, e});
  }));
  EXPECT_TRUE(calls.empty());
}

TEST_P(CpuEngine, PositionsTheHookNamesAreFinalAndTheNextLayerIsNotYetComputed) {
  const auto tokens = prompt(23, 10);
  auto e = make(2, 6);
  auto id = e->add_sequence();
  ASSERT_TRUE(id);
  const std::size_t layers = e->pool().layout().n_layers;
  // Snapshot at each call: the named positions of that layer, and of the next layer.
  std::map<std::pair<std::size_t, std::size_t>, std::vector<float>> seen;
  std::size_t calls = 0;
  ASSERT_TRUE(e->prefill(*id, tokens, [&](std::size_t layer, std::size_t first, std::size_t end) {
    ++calls;
    for (std::size_t p = first; p < end; ++p) {
      seen[{layer, p}] = kv_at(*e, *id, layer, p);
      if (layer + 1 < layers) {
        const auto next = kv_at(*e, *id, layer + 1, p);
        EXPECT_TRUE(std::all_of(next.begin(), next.end(), [](float x) { return x == 0.0f; }))
            << "layer " << layer + 1 << " position " << p << " computed too early";
      }
    }
  }));
  EXPECT_EQ(calls, layers * 4);  // chunks of 6, 6, 6, 5
  ASSERT_EQ(seen.size(), layers * tokens.size());
  for (const auto& [where, values] : seen) {
    const auto now = kv_at(*e, *id, where.first, where.second);
    EXPECT_TRUE(same_bits(values, now)) << "layer " << where.first << " position " << where.second;
    EXPECT_FALSE(std::all_of(now.begin(), now.end(), [](float x) { return x == 0.0f; }));
  }
}

TEST_P(CpuEngine, KvPoolLivesInCallerMemory) {
  auto own = make(2);
  const kv_layout layout = own->pool().layout();
  std::vector<float> backing(layout.block_floats() * 7 + 3, -1.0f);  // 7 blocks and a bit
  const auto memory = std::as_writable_bytes(std::span(backing));
  engine_options options;
  options.threads = 2;
  options.block_tokens = layout.block_tokens;
  options.kernel = GetParam();
  options.min_parallel_work = 0;
  options.kv_memory = memory;
  auto e = cpu_engine::create(*model_, options);
  ASSERT_TRUE(e) << e.error().to_string();
  kv_pool& pool = (*e)->pool();
  EXPECT_EQ(pool.bytes().data(), memory.data());
  EXPECT_EQ(pool.n_blocks(), 7U);
  EXPECT_EQ(pool.bytes().size(), 7 * layout.block_bytes());
  for (std::size_t b = 0; b < pool.n_blocks(); ++b) {
    for (std::size_t l = 0; l < layout.n_layers; ++l) {
      const auto block = static_cast<block_id>(b);
      EXPECT_EQ(pool.bytes().data() + pool.byte_offset(block, l),
                reinterpret_cast<const std::byte*>(pool.slice(block, l).data()));
    }
  }
  const auto tokens = prompt(21, 12);
  auto a = own->add_sequence();
  auto b = (*e)->add_sequence();
  EXPECT_TRUE(same_bits(copy(own->prefill(*a, tokens)), copy((*e)->prefill(*b, tokens))));
  // The KV is really in the caller's memory, byte for byte what the engine's own pool has.
  const auto first = pool.byte_offset((*e)->blocks(*b)[0], 0);
  const auto theirs = own->pool().slice(own->blocks(*a)[0], 0);
  EXPECT_EQ(std::memcmp(memory.data() + first, theirs.data(), theirs.size_bytes()), 0);
}

TEST_P(CpuEngine, RejectsKvMemoryThatDoesNotFit) {
  auto own = make(1);
  const kv_layout layout = own->pool().layout();
  std::vector<float> backing(layout.block_floats() * 2 + 1);
  const auto memory = std::as_writable_bytes(std::span(backing));
  engine_options options;
  options.threads = 1;
  options.block_tokens = layout.block_tokens;
  options.kernel = GetParam();
  options.kv_memory = memory.first(layout.block_bytes() - 4);  // not one block
  auto none = cpu_engine::create(*model_, options);
  ASSERT_FALSE(none);
  EXPECT_EQ(none.error().code, errc::invalid_argument);
  options.kv_memory = memory;
  options.kv_blocks = 3;  // two fit
  auto too_many = cpu_engine::create(*model_, options);
  ASSERT_FALSE(too_many);
  EXPECT_EQ(too_many.error().code, errc::invalid_argument);
  options.kv_memory = memory.subspan(1, layout.block_bytes() * 2);  // misaligned
  options.kv_blocks = 0;
  auto misaligned = cpu_engine::create(*model_, options);
  ASSERT_FALSE(misaligned);
  EXPECT_EQ(misaligned.error().code, errc::invalid_argument);
  options.kv_memory = memory;
  options.kv_blocks = 2;
  EXPECT_TRUE(cpu_engine::create(*model_, options));
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
