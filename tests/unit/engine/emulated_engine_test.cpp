#include "engine/emulated_engine.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include <gtest/gtest.h>

#include "engine/kv_transfer.hpp"
#include "tests/unit/engine/test_models.hpp"

namespace baton::engine {
namespace {

hardware_profile profile_named(const char* name) {
  auto catalog = load_builtin_profiles();
  EXPECT_TRUE(catalog) << catalog.error().to_string();
  auto p = catalog->profile(name);
  EXPECT_TRUE(p) << p.error().to_string();
  return *p;
}

model_shape llama_70b() {
  auto catalog = load_builtin_profiles();
  EXPECT_TRUE(catalog);
  auto s = catalog->shape("llama-3.1-70b");
  EXPECT_TRUE(s);
  return *s;
}

/// 70B at 1/64 of its KV, small pool: 80 layers x 2 x 8 x 8 floats per position.
emulated_options small_options() {
  emulated_options o;
  o.scale = 64;
  o.block_tokens = 4;
  o.max_sequences = 4;
  o.max_context = 64;
  o.kv_blocks = 40;
  return o;
}

std::unique_ptr<emulated_engine> make(const emulated_options& o = small_options(),
                                      const char* profile = "trn2") {
  auto e = emulated_engine::create(profile_named(profile), llama_70b(), o);
  EXPECT_TRUE(e) << e.error().to_string();
  return std::move(*e);
}

std::vector<std::int32_t> prompt(std::size_t length, std::int32_t salt = 0) {
  std::vector<std::int32_t> tokens;
  for (std::size_t i = 0; i < length; ++i) {
    tokens.push_back(
        static_cast<std::int32_t>((i * 7919 + static_cast<std::size_t>(salt)) % 128000));
  }
  return tokens;
}

/// Prefills `tokens` into a new sequence, then decodes `steps` tokens greedily.
std::vector<std::int32_t> generate(emulated_engine& e, const std::vector<std::int32_t>& tokens,
                                   std::size_t steps) {
  auto s = e.add_sequence();
  EXPECT_TRUE(s);
  auto first = e.prefill(*s, tokens);
  EXPECT_TRUE(first) << first.error().to_string();
  std::vector<std::int32_t> out{first->tokens[0]};
  for (std::size_t i = 0; i < steps; ++i) {
    const decode_input in{*s, out.back()};
    auto step = e.decode(std::span(&in, 1));
    EXPECT_TRUE(step) << step.error().to_string();
    out.push_back(step->tokens[0]);
  }
  return out;
}

TEST(EmulatedEngine, TokensAreDeterministic) {
  auto a = make();
  auto b = make();
  const auto tokens = generate(*a, prompt(10), 8);
  EXPECT_EQ(tokens, generate(*b, prompt(10), 8));
  EXPECT_NE(tokens, generate(*b, prompt(10, 1), 8));
  EXPECT_EQ(a->fingerprint(), b->fingerprint());
}

TEST(EmulatedEngine, KvDependsOnlyOnTokensAndPositions) {
  auto a = make();
  auto b = make();
  const auto tokens = prompt(11);
  auto sa = a->add_sequence();
  auto sb = b->add_sequence();
  ASSERT_TRUE(sa && sb);
  auto ra = a->prefill(*sa, tokens);
  ASSERT_TRUE(ra);
  const std::int32_t whole = ra->tokens[0];
  // Same positions in two prefill chunks and one decode step.
  ASSERT_TRUE(b->prefill(*sb, std::span(tokens).first(6)));
  ASSERT_TRUE(b->prefill(*sb, std::span(tokens).subspan(6, 4)));
  const decode_input last{*sb, tokens[10]};
  auto rb = b->decode(std::span(&last, 1));
  ASSERT_TRUE(rb);
  EXPECT_EQ(rb->tokens[0], whole);
  EXPECT_EQ(block_checksums(*a, *sa), block_checksums(*b, *sb));
}

TEST(EmulatedEngine, CorruptingOneKvByteChangesTheNextToken) {
  for (const token_digest digest : {token_digest::whole_sequence, token_digest::last_position}) {
    emulated_options o = small_options();
    o.digest = digest;
    auto e = make(o);
    auto s = e->add_sequence();
    ASSERT_TRUE(s);
    auto r = e->prefill(*s, prompt(10));  // 3 blocks of 4; position 9 is row 1 of block 2
    ASSERT_TRUE(r);
    const std::int32_t before = r->tokens[0];
    EXPECT_EQ(e->next_token(*s), before);
    // whole_sequence: a byte of the first block; last_position: a byte of position 9.
    const bool whole = digest == token_digest::whole_sequence;
    const block_id block = e->blocks(*s)[whole ? 0 : 2];
    const std::size_t row = whole ? 0 : 1;
    const std::size_t head_size = e->pool().layout().head_size;
    auto* bytes =
        reinterpret_cast<unsigned char*>(e->pool().slice(block, 5).data() + row * head_size);
    bytes[1] ^= 0x10;
    EXPECT_NE(e->next_token(*s), before) << (whole ? "whole" : "last");
    bytes[1] ^= 0x10;
    EXPECT_EQ(e->next_token(*s), before);
  }
}

TEST(EmulatedEngine, KvMovedToAnotherEngineContinuesIdentically) {
  auto prefill_node = make();
  emulated_options decode_options = small_options();
  auto decode_node = make(decode_options, "cs3");
  const auto tokens = prompt(10);
  auto source = prefill_node->add_sequence();
  ASSERT_TRUE(source);
  auto first = prefill_node->prefill(*source, tokens);
  ASSERT_TRUE(first);
  const auto sums = block_checksums(*prefill_node, *source);
  auto target = decode_node->reserve_sequence(tokens.size());
  ASSERT_TRUE(target) << target.error().to_string();
  const std::size_t layers = prefill_node->pool().layout().n_layers;
  for (std::size_t layer = 0; layer < layers; ++layer) {
    for (std::size_t b = 0; b < sums.size(); ++b) {
      const auto from = prefill_node->pool().slice(prefill_node->blocks(*source)[b], layer);
      const auto to = decode_node->pool().slice(decode_node->blocks(*target)[b], layer);
      ASSERT_EQ(from.size(), to.size());
      std::copy(from.begin(), from.end(), to.begin());
    }
  }
  EXPECT_EQ(block_checksums(*decode_node, *target), sums);
  EXPECT_EQ(decode_node->next_token(*target), first->tokens[0]);
  const decode_input a{*source, first->tokens[0]};
  const decode_input b{*target, first->tokens[0]};
  auto ra = prefill_node->decode(std::span(&a, 1));
  auto rb = decode_node->decode(std::span(&b, 1));
  ASSERT_TRUE(ra && rb);
  EXPECT_EQ(ra->tokens[0], rb->tokens[0]);
  // Swapping two blocks (KV moved to the wrong place) changes the token.
  auto swapped = decode_node->reserve_sequence(tokens.size());
  ASSERT_TRUE(swapped);
  for (std::size_t layer = 0; layer < layers; ++layer) {
    for (std::size_t i = 0; i < sums.size(); ++i) {
      const std::size_t from_block = i < 2 ? 1 - i : i;
      const auto from =
          prefill_node->pool().slice(prefill_node->blocks(*source)[from_block], layer);
      const auto to = decode_node->pool().slice(decode_node->blocks(*swapped)[i], layer);
      std::copy(from.begin(), from.end(), to.begin());
    }
  }
  EXPECT_NE(decode_node->next_token(*swapped), first->tokens[0]);
}

TEST(EmulatedEngine, KvSliceSizesMatchTheFormula) {
  for (const std::size_t scale : {1U, 16U, 64U, 512U}) {
    emulated_options o = small_options();
    o.scale = scale;
    o.kv_blocks = 2;
    auto e = make(o);
    const kv_layout& layout = e->pool().layout();
    // Real slice: 2 (K,V) x block_tokens x n_kv_heads x head_dim x 2 bytes (BF16).
    EXPECT_EQ(layout.slice_bytes() * scale, 2U * 4 * 8 * 128 * 2) << scale;
    EXPECT_EQ(layout.n_layers, 80U);
    EXPECT_EQ(layout.block_floats() * sizeof(float) * scale / layout.block_tokens,
              kv_bytes_per_token(llama_70b(), precision::bf16));
    EXPECT_EQ(layout.block_floats() * sizeof(float) * scale / layout.block_tokens, 327680U);
  }
}

TEST(EmulatedEngine, ModelledTimeComesFromTheRooflineAndNeverBlocks) {
  emulated_options o = small_options();
  o.time_scale = 0.5;
  auto e = make(o);
  auto s = e->add_sequence();
  ASSERT_TRUE(s);
  auto r = e->prefill(*s, prompt(10));
  ASSERT_TRUE(r);
  auto predicted = predict_prefill(e->profile(), e->shape(), 10, 0, precision::bf16);
  ASSERT_TRUE(predicted);
  EXPECT_EQ(r->modelled.count(), std::llround(static_cast<double>(predicted->time.count()) * 0.5));
  const std::int32_t first = r->tokens[0];  // the span lives until the next call
  const decode_input in{*s, first};
  auto d = e->decode(std::span(&in, 1));
  ASSERT_TRUE(d);
  const std::vector<std::size_t> contexts{11};
  auto step = predict_decode_step(e->profile(), e->shape(), contexts, precision::bf16);
  ASSERT_TRUE(step);
  EXPECT_EQ(d->modelled.count(), std::llround(static_cast<double>(step->time.count()) * 0.5));

  o.time_scale = 0.0;  // zero compute time
  auto zero = make(o);
  auto z = zero->add_sequence();
  ASSERT_TRUE(z);
  auto rz = zero->prefill(*z, prompt(10));
  ASSERT_TRUE(rz);
  EXPECT_EQ(rz->modelled.count(), 0);
  EXPECT_EQ(rz->tokens[0], first);  // time scale never changes tokens
}

TEST(EmulatedEngine, NeverProducesBos) {
  emulated_options o = small_options();
  o.vocab_size = 3;  // a third of all digests would land on BOS
  o.digest = token_digest::last_position;
  auto e = make(o);
  auto s = e->add_sequence();
  ASSERT_TRUE(s);
  std::int32_t token = 0;
  for (int i = 0; i < 60; ++i) {
    const std::vector<std::int32_t> one{token};
    auto r = e->prefill(*s, one);
    ASSERT_TRUE(r);
    token = r->tokens[0];
    EXPECT_NE(token, emulated_bos_token);
    EXPECT_GE(token, 0);
    EXPECT_LT(token, 3);
  }
}

TEST(EmulatedEngine, LimitsFailWithoutSideEffects) {
  emulated_options o = small_options();
  o.kv_blocks = 3;
  auto e = make(o);
  auto s = e->add_sequence();
  ASSERT_TRUE(s);
  ASSERT_TRUE(e->prefill(*s, prompt(8)));
  auto full = e->prefill(*s, prompt(5));  // needs 2 more blocks, 1 free
  ASSERT_FALSE(full);
  EXPECT_EQ(full.error().code, errc::overloaded);
  EXPECT_EQ(e->length(*s), 8U);
  EXPECT_EQ(e->pool().free_blocks(), 1U);
  const std::vector<std::int32_t> bad{128256};
  auto token = e->prefill(*s, bad);
  ASSERT_FALSE(token);
  EXPECT_EQ(token.error().code, errc::invalid_argument);
  auto past = e->prefill(*s, prompt(60));
  ASSERT_FALSE(past);
  EXPECT_EQ(past.error().code, errc::invalid_argument);
  const decode_input twice[] = {{*s, 5}, {*s, 6}};
  auto dup = e->decode(twice);
  ASSERT_FALSE(dup);
  EXPECT_EQ(dup.error().code, errc::invalid_argument);
  EXPECT_EQ(e->length(*s), 8U);
  e->remove_sequence(*s);
  EXPECT_EQ(e->pool().free_blocks(), 3U);
}

TEST(EmulatedEngine, BadOptionsGiveClearErrors) {
  emulated_options o = small_options();
  o.scale = 3;
  auto e = emulated_engine::create(profile_named("trn2"), llama_70b(), o);
  ASSERT_FALSE(e);
  EXPECT_EQ(e.error().code, errc::invalid_argument);
  EXPECT_NE(e.error().message.find("scale 3 must divide 512"), std::string::npos)
      << e.error().message;
  o = small_options();
  o.max_context = 1 << 20;
  e = emulated_engine::create(profile_named("trn2"), llama_70b(), o);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("max_context"), std::string::npos) << e.error().message;
  o = small_options();
  o.scale = 1;
  o.kv_blocks = 0;
  o.max_context = 131072;  // 4 x 128k positions x 320 KiB: far over the pool limit
  e = emulated_engine::create(profile_named("trn2"), llama_70b(), o);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("raise scale"), std::string::npos) << e.error().message;
  o = small_options();
  o.numbers = precision::fp8;
  e = emulated_engine::create(profile_named("cs3"), llama_70b(), o);
  ASSERT_FALSE(e);
  EXPECT_NE(e.error().message.find("fp8"), std::string::npos) << e.error().message;
}

TEST(EmulatedEngine, FingerprintSaysEmulatedAndProfile) {
  auto e = make();
  EXPECT_EQ(e->fingerprint().rfind("emulated:trn2 ", 0), 0U) << e->fingerprint();
  EXPECT_NE(e->fingerprint().find("shape=llama-3.1-70b"), std::string::npos);
  EXPECT_NE(e->describe().find("emulated:trn2"), std::string::npos);
}

TEST(EmulatedEngine, RunsACustomShapeFromACheckpoint) {
  const model m = testing::synthetic_model(testing::small_config(), 5, "emulated_custom.bin");
  const model_shape shape = shape_from_config(m.config(), m.path());
  EXPECT_EQ(shape.name, "custom");
  EXPECT_EQ(shape.params, m.config().parameter_count());
  emulated_options o;
  o.scale = 5;  // 2 kv heads x 20 x 2 bytes = 20 floats
  o.block_tokens = 4;
  o.max_sequences = 2;
  o.max_context = 64;
  auto e = emulated_engine::create(profile_named("h100"), shape, o);
  ASSERT_TRUE(e) << e.error().to_string();
  EXPECT_EQ((*e)->pool().layout().kv_dim, 4U);
  const auto tokens = generate(**e, {1, 5, 9}, 5);
  for (const std::int32_t t : tokens) EXPECT_LT(t, 300);
}

}  // namespace
}  // namespace baton::engine
