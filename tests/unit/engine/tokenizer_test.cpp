#include "engine/tokenizer.hpp"

#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <random>
#include <vector>

#include <gtest/gtest.h>

#include "tests/unit/engine/test_models.hpp"

namespace baton::engine {
namespace {

using testing::shared_model;

tokenizer load_tok512() {
  auto t = tokenizer::load(shared_model("tok512.bin"), 512);
  EXPECT_TRUE(t) << t.error().to_string();
  return std::move(*t);
}

/// The text llama2.c prints for `tokens` (BOS first): each piece after its predecessor.
std::string decode_all(const tokenizer& t, const std::vector<std::int32_t>& tokens) {
  std::string text;
  for (std::size_t i = 1; i < tokens.size(); ++i) text += t.decode(tokens[i - 1], tokens[i]);
  return text;
}

using testing::read_file;
using testing::write_temp;

TEST(Tokenizer, EncodesReadmePrompt) {
  const tokenizer t = load_tok512();
  EXPECT_EQ(t.encode("Once upon a time", true, false),
            (std::vector<std::int32_t>{1, 403, 407, 261, 378}));
  EXPECT_EQ(t.encode("", true, true), (std::vector<std::int32_t>{1, 2}));
}

/// llama2.c's merge loop as it is written there (every pair looked up on every pass), over
/// the tokens encode() starts from: the reference for encode()'s incremental loop.
std::vector<std::int32_t> merge_like_llama2c(const tokenizer& t,
                                             const std::map<std::string, std::int32_t>& ids,
                                             std::vector<std::int32_t> tokens) {
  while (true) {
    float best_score = -1e10f;
    std::int32_t best_id = -1;
    std::size_t best = 0;
    for (std::size_t i = 0; i + 1 < tokens.size(); ++i) {
      auto it = ids.find(t.piece(tokens[i]) + t.piece(tokens[i + 1]));
      if (it != ids.end() && t.score(it->second) > best_score) {
        best_score = t.score(it->second);
        best_id = it->second;
        best = i;
      }
    }
    if (best_id < 0) return tokens;
    tokens[best] = best_id;
    tokens.erase(tokens.begin() + static_cast<std::ptrdiff_t>(best) + 1);
  }
}

TEST(Tokenizer, MergesExactlyAsLlama2cDoes) {
  const tokenizer t = load_tok512();
  std::map<std::string, std::int32_t> ids;
  for (std::int32_t id = 0; id < t.vocab_size(); ++id) ids.emplace(t.piece(id), id);
  const std::uint64_t seed = 1129;
  std::mt19937_64 rng(seed);
  const std::string alphabet = "abcdeilnorstuy ,.!?\nLBO";
  for (int round = 0; round < 300; ++round) {
    std::string text;
    const auto length = rng() % (round < 290 ? 120 : 4000);  // a few prompts of ~1,000 tokens
    for (std::uint64_t i = 0; i < length; ++i) text += alphabet[rng() % alphabet.size()];
    // The unmerged start: BOS, the leading space, one token per character (ASCII only).
    std::vector<std::int32_t> start{tokenizer::bos};
    if (!text.empty()) start.push_back(ids.at(" "));
    for (const char c : text) {
      auto it = ids.find(std::string(1, c));
      start.push_back(it != ids.end() ? it->second
                                      : tokenizer::byte_offset + static_cast<unsigned char>(c));
    }
    EXPECT_EQ(t.encode(text, true, false), merge_like_llama2c(t, ids, start))
        << "seed " << seed << " round " << round << ": '" << text << "'";
  }
}

TEST(Tokenizer, ASyntheticTokenizerLoadsAndRoundTripsAnyText) {
  const auto path = write_temp("synthetic-tok.bin", {});
  ASSERT_TRUE(write_synthetic_tokenizer(path, 512));
  auto t = tokenizer::load(path, 512);
  ASSERT_TRUE(t) << t.error().to_string();
  for (const std::string text : {"Once upon a time", "caf\xC3\xA9 \xE2\x9C\x93", "zz top"}) {
    EXPECT_EQ(decode_all(*t, t->encode(text, true, false)), text) << text;
  }
  EXPECT_FALSE(write_synthetic_tokenizer(path, 258)) << "too small for the byte tokens";
}

TEST(Tokenizer, RoundTripsText) {
  const tokenizer t = load_tok512();
  for (const std::string text :
       {"Once upon a time", "Lily and Ben are friends.", "  two  spaces\nnew line",
        "caf\xC3\xA9 \xE2\x9C\x93 \xF0\x9F\x98\x80 <0x41>", "x"}) {
    EXPECT_EQ(decode_all(t, t.encode(text, true, false)), text) << text;
  }
}

TEST(Tokenizer, UnknownCodePointsFallBackToBytes) {
  const tokenizer t = load_tok512();
  const auto tokens = t.encode("\xF0\x9F\x98\x80", true, false);  // an emoji
  ASSERT_EQ(tokens.size(), 6U);                                   // BOS, " ", four bytes
  EXPECT_EQ(tokens[2], 0xF0 + tokenizer::byte_offset);
  EXPECT_EQ(t.decode(tokens[2], tokens[3]), "\x9F");
}

TEST(Tokenizer, DropsLeadingSpaceOnlyAfterBos) {
  const tokenizer t = load_tok512();
  EXPECT_EQ(t.decode(tokenizer::bos, 403), "Once");
  EXPECT_EQ(t.decode(403, 403), " Once");
}

TEST(Tokenizer, PrintableFiltersControlBytes) {
  EXPECT_EQ(printable(std::string(1, '\x01')), "");
  EXPECT_EQ(printable("\n"), "\n");
  EXPECT_EQ(printable("a"), "a");
  EXPECT_EQ(printable("\x01\x02"), "\x01\x02");
}

TEST(Tokenizer, TruncatedFileIsRejected) {
  auto bytes = read_file(shared_model("tok512.bin"));
  bytes.resize(bytes.size() - 3);
  const std::string path = write_temp("tok_truncated.bin", bytes);
  auto t = tokenizer::load(path, 512);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, errc::invalid_argument);
  EXPECT_NE(t.error().message.find(path), std::string::npos) << t.error().message;
  EXPECT_NE(t.error().message.find("token 511"), std::string::npos) << t.error().message;
}

TEST(Tokenizer, VocabMismatchIsRejected) {
  auto t = tokenizer::load(shared_model("tok512.bin"), 500);
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("left after 500 tokens"), std::string::npos)
      << t.error().message;
  t = tokenizer::load(shared_model("tok512.bin"), 600);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, errc::invalid_argument);
}

TEST(Tokenizer, BadLengthIsRejected) {
  auto bytes = read_file(shared_model("tok512.bin"));
  const std::int32_t length = -5;
  std::memcpy(bytes.data() + 8, &length, sizeof(length));  // token 0's length
  auto t = tokenizer::load(write_temp("tok_length.bin", bytes), 512);
  ASSERT_FALSE(t);
  EXPECT_NE(t.error().message.find("token 0 has length -5"), std::string::npos)
      << t.error().message;
}

TEST(Tokenizer, MissingFileIsNotFound) {
  auto t = tokenizer::load(testing::temp_path("no-such-tok.bin"), 512);
  ASSERT_FALSE(t);
  EXPECT_EQ(t.error().code, errc::not_found);
}

}  // namespace
}  // namespace baton::engine
