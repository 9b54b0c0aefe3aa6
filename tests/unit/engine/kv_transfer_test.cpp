#include "engine/kv_transfer.hpp"

#include <cstring>
#include <optional>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/engine/test_models.hpp"

namespace baton::engine {
namespace {

class KvTransfer : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    model_.emplace(testing::synthetic_model(testing::small_config(), 21, "kv.bin"));
  }
  static void TearDownTestSuite() { model_.reset(); }

  static std::unique_ptr<cpu_engine> make(std::size_t threads, std::size_t max_batch_tokens) {
    engine_options options;
    options.threads = threads;
    options.block_tokens = 4;
    options.max_sequences = 4;
    options.max_batch_tokens = max_batch_tokens;
    options.min_parallel_work = 0;
    auto e = cpu_engine::create(*model_, options);
    EXPECT_TRUE(e) << e.error().to_string();
    return std::move(*e);
  }

  static std::optional<model> model_;
};

std::optional<model> KvTransfer::model_;

std::vector<std::int32_t> tokens_for(std::size_t length) {
  std::vector<std::int32_t> tokens{1};
  for (std::size_t i = 1; i < length; ++i) {
    tokens.push_back(static_cast<std::int32_t>((i * 13) % 290) + 3);
  }
  return tokens;
}

TEST_F(KvTransfer, ImportedCacheContinuesBitIdentically) {
  auto prefill_node = make(2, 256);
  auto decode_node = make(1, 3);
  const auto prompt = tokens_for(23);  // 6 blocks of 4, the last one partly filled
  auto source = prefill_node->add_sequence();
  ASSERT_TRUE(source);
  ASSERT_TRUE(prefill_node->prefill(*source, prompt));
  const auto sums = block_checksums(*prefill_node, *source);
  ASSERT_EQ(sums.size(), 6U);

  auto target = decode_node->reserve_sequence(prompt.size());
  ASSERT_TRUE(target) << target.error().to_string();
  const auto layers = static_cast<std::size_t>(testing::small_config().n_layers);
  for (std::size_t layer = 0; layer < layers; ++layer) {  // layer by layer, as a prefill ships
    for (std::size_t block = 0; block < sums.size(); ++block) {
      auto slice = export_slice(*prefill_node, *source, block, layer);
      ASSERT_TRUE(slice);
      ASSERT_TRUE(import_slice(*decode_node, *target, block, layer, *slice));
    }
  }
  for (std::size_t block = 0; block < sums.size(); ++block) {
    EXPECT_TRUE(verify_block(*decode_node, *target, block, sums[block]));
  }
  EXPECT_EQ(decode_node->length(*target), prompt.size());
  std::int32_t token = 17;
  for (int step = 0; step < 12; ++step) {
    const decode_input a{*source, token};
    const decode_input b{*target, token};
    auto la = prefill_node->decode(std::span(&a, 1));
    ASSERT_TRUE(la);
    const std::vector<float> from_source(la->begin(), la->end());
    auto lb = decode_node->decode(std::span(&b, 1));
    ASSERT_TRUE(lb);
    ASSERT_EQ(from_source.size(), lb->size());
    EXPECT_EQ(std::memcmp(from_source.data(), lb->data(), lb->size_bytes()), 0) << step;
    token = static_cast<std::int32_t>((token * 7 + step) % 290) + 3;
  }
  EXPECT_EQ(block_checksums(*prefill_node, *source), block_checksums(*decode_node, *target));
}

TEST_F(KvTransfer, CorruptedBlockFailsVerification) {
  auto a = make(1, 256);
  auto b = make(1, 256);
  auto source = a->add_sequence();
  ASSERT_TRUE(a->prefill(*source, tokens_for(9)));
  const auto sums = block_checksums(*a, *source);
  auto target = b->reserve_sequence(9);
  ASSERT_TRUE(target);
  for (std::size_t block = 0; block < sums.size(); ++block) {
    for (std::size_t layer = 0; layer < 2; ++layer) {
      auto slice = export_slice(*a, *source, block, layer);
      std::vector<float> copy(slice->begin(), slice->end());
      if (block == 1 && layer == 1) copy[5] += 1.0f;  // one flipped value in transit
      ASSERT_TRUE(import_slice(*b, *target, block, layer, copy));
    }
  }
  EXPECT_TRUE(verify_block(*b, *target, 0, sums[0]));
  auto bad = verify_block(*b, *target, 1, sums[1]);
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_NE(bad.error().message.find("kv block 1"), std::string::npos);
}

TEST_F(KvTransfer, RejectsBadSlices) {
  auto e = make(1, 256);
  auto id = e->reserve_sequence(5);
  ASSERT_TRUE(id);
  EXPECT_FALSE(export_slice(*e, *id, 2, 0));  // only 2 blocks
  EXPECT_FALSE(export_slice(*e, *id, 0, 2));  // only 2 layers
  std::vector<float> wrong(7);
  EXPECT_FALSE(import_slice(*e, *id, 0, 0, wrong));
  EXPECT_FALSE(e->reserve_sequence(65));  // past seq_len
}

TEST_F(KvTransfer, PartialBlockChecksumDependsOnlyOnTokens) {
  // A block reused from an earlier, longer sequence must not leak its old bytes.
  auto e = make(1, 256);
  auto first = e->add_sequence();
  ASSERT_TRUE(e->prefill(*first, tokens_for(8)));
  e->remove_sequence(*first);
  auto second = e->add_sequence();
  ASSERT_TRUE(e->prefill(*second, tokens_for(6)));
  auto fresh = make(1, 256);
  auto other = fresh->add_sequence();
  ASSERT_TRUE(fresh->prefill(*other, tokens_for(6)));
  EXPECT_EQ(block_checksums(*e, *second), block_checksums(*fresh, *other));
}

}  // namespace
}  // namespace baton::engine
