#include "engine/model.hpp"

#include <climits>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/engine/test_models.hpp"

namespace baton::engine {
namespace {

using testing::shared_model;

using testing::read_file;
using testing::write_temp;

TEST(Model, LoadsStories260K) {
  auto m = model::load(shared_model("stories260K.bin"));
  ASSERT_TRUE(m) << m.error().to_string();
  const model_config& c = m->config();
  EXPECT_EQ(c.dim, 64);
  EXPECT_EQ(c.hidden_dim, 172);
  EXPECT_EQ(c.n_layers, 5);
  EXPECT_EQ(c.n_heads, 8);
  EXPECT_EQ(c.n_kv_heads, 4);
  EXPECT_EQ(c.kv_dim(), 32);
  EXPECT_EQ(c.vocab_size, 512);
  EXPECT_EQ(c.seq_len, 512);
  EXPECT_TRUE(c.shared_classifier);
  EXPECT_EQ(c.file_bytes(), 1056540U);
  EXPECT_EQ(m->weights().classifier, m->weights().token_embedding);
  EXPECT_EQ(m->weights().layers.size(), 5U);
}

TEST(Model, MissingFileIsNotFound) {
  auto m = model::load(testing::temp_path("no-such-model.bin"));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, errc::not_found);
}

TEST(Model, TruncatedFileNamesSizes) {
  auto bytes = read_file(shared_model("stories260K.bin"));
  bytes.resize(1000);
  const std::string path = write_temp("truncated.bin", bytes);
  auto m = model::load(path);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, errc::invalid_argument);
  EXPECT_NE(m.error().message.find(path), std::string::npos) << m.error().message;
  EXPECT_NE(m.error().message.find("file is 1000 bytes, expected 1056540 for dim=64"),
            std::string::npos)
      << m.error().message;
}

TEST(Model, ExtraBytesAreRejected) {
  auto bytes = read_file(shared_model("stories260K.bin"));
  bytes.push_back(0);
  auto m = model::load(write_temp("long.bin", bytes));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, errc::invalid_argument);
}

TEST(Model, ShortHeaderIsRejected) {
  auto m = model::load(write_temp("header.bin", std::vector<char>(10, 1)));
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code, errc::invalid_argument);
  EXPECT_NE(m.error().message.find("header"), std::string::npos) << m.error().message;
}

TEST(Model, InconsistentHeaderNamesField) {
  auto bytes = read_file(shared_model("stories260K.bin"));
  const std::int32_t heads = 7;  // 64 is not a multiple of 7
  std::memcpy(bytes.data() + 3 * sizeof(std::int32_t), &heads, sizeof(heads));
  auto m = model::load(write_temp("heads.bin", bytes));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("n_heads=7"), std::string::npos) << m.error().message;
  const std::int32_t zero = 0;
  std::memcpy(bytes.data(), &zero, sizeof(zero));
  m = model::load(write_temp("dim.bin", bytes));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("dim is 0"), std::string::npos) << m.error().message;
}

TEST(Model, MostNegativeVocabIsRejected) {
  auto bytes = read_file(shared_model("stories260K.bin"));
  const std::int32_t vocab = INT32_MIN;
  std::memcpy(bytes.data() + 5 * sizeof(std::int32_t), &vocab, sizeof(vocab));
  auto m = model::load(write_temp("vocab.bin", bytes));
  ASSERT_FALSE(m);
  EXPECT_NE(m.error().message.find("vocab_size"), std::string::npos) << m.error().message;
}

TEST(Model, SynthIsDeterministicAndLoads) {
  model_config c = testing::small_config();
  const std::string a = testing::temp_path("synth_a.bin");
  const std::string b = testing::temp_path("synth_b.bin");
  const std::string other = testing::temp_path("synth_c.bin");
  ASSERT_TRUE(write_synthetic_model(a, c, 5));
  ASSERT_TRUE(write_synthetic_model(b, c, 5));
  ASSERT_TRUE(write_synthetic_model(other, c, 6));
  EXPECT_EQ(read_file(a), read_file(b));
  EXPECT_NE(read_file(a), read_file(other));
  auto m = model::load(a);
  ASSERT_TRUE(m) << m.error().to_string();
  EXPECT_EQ(m->config().describe(), c.describe());
  EXPECT_EQ(read_file(a).size(), c.file_bytes());
}

TEST(Model, SeparateClassifierLoads) {
  model_config c = testing::small_config();
  c.shared_classifier = false;
  const model m = testing::synthetic_model(c, 3, "separate.bin");
  EXPECT_FALSE(m.config().shared_classifier);
  EXPECT_NE(m.weights().classifier, m.weights().token_embedding);
  // The classifier is the last vocab x dim floats of the file.
  const auto* end = m.weights().classifier + static_cast<std::size_t>(c.vocab_size * c.dim);
  const auto* rope_end = m.weights().rms_final + c.dim + c.seq_len * c.head_size();
  EXPECT_EQ(m.weights().classifier, rope_end);
  EXPECT_EQ(reinterpret_cast<const char*>(end) -
                reinterpret_cast<const char*>(m.weights().token_embedding) + 28,
            static_cast<std::ptrdiff_t>(c.file_bytes()));
}

}  // namespace
}  // namespace baton::engine
