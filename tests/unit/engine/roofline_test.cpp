#include "engine/roofline.hpp"

#include <fstream>
#include <iterator>
#include <set>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace baton::engine {
namespace {

profile_catalog builtin() {
  auto catalog = load_builtin_profiles();
  EXPECT_TRUE(catalog) << catalog.error().to_string();
  return *catalog;
}

hardware_profile profile_named(const char* name) {
  auto p = builtin().profile(name);
  EXPECT_TRUE(p) << p.error().to_string();
  return *p;
}

model_shape shape_named(const char* name) {
  auto s = builtin().shape(name);
  EXPECT_TRUE(s) << s.error().to_string();
  return *s;
}

double ms(std::chrono::nanoseconds t) {
  return static_cast<double>(t.count()) / 1e6;
}

TEST(Profiles, BuiltinFileParsesWithEveryProfileAndShape) {
  const profile_catalog catalog = builtin();
  std::set<std::string> profiles;
  for (const auto& p : catalog.profiles) profiles.insert(p.name);
  EXPECT_EQ(profiles, (std::set<std::string>{"trn2", "trn3", "cs3", "h100", "h200", "b200"}));
  std::set<std::string> shapes;
  for (const auto& s : catalog.shapes) shapes.insert(s.name);
  EXPECT_EQ(shapes, (std::set<std::string>{"llama-3.1-8b", "llama-3.1-70b", "llama-3.1-405b"}));
}

TEST(Profiles, EveryFigureHasASource) {
  for (const auto& p : builtin().profiles) {
    const auto figures = p.figures();
    EXPECT_GE(figures.size(), 9U) << p.name;
    for (const auto& [key, f] : figures) {
      EXPECT_GE(f->value, 0.0) << p.name << "." << key;
      // Each figure cites HARDWARE.md or says it is our assumption.
      const bool cited = f->source.find("HARDWARE.md") != std::string::npos ||
                         f->source.find("[A]") != std::string::npos;
      EXPECT_TRUE(cited) << p.name << "." << key << ": " << f->source;
    }
  }
}

TEST(Profiles, FigureWithoutSourceIsRejected) {
  const std::string text = R"([profile.x]
description = "x"
decode_model = "roofline"
devices = { value = 1 }
)";
  auto catalog = parse_profiles(text, "bad.toml");
  ASSERT_FALSE(catalog);
  EXPECT_EQ(catalog.error().code, errc::invalid_argument);
  EXPECT_NE(catalog.error().message.find("bad.toml:4:"), std::string::npos)
      << catalog.error().message;
  EXPECT_NE(catalog.error().message.find("source"), std::string::npos) << catalog.error().message;
}

TEST(Profiles, MisspelledKeyIsRejected) {
  std::string text(builtin_profiles_toml());
  const std::string key = "flops_fp8_per_s = { value = 20.8e15";
  const auto at = text.find(key);
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 15, "flops_fp8_per_sec");
  auto catalog = parse_profiles(text, "typo.toml");
  ASSERT_FALSE(catalog);
  EXPECT_NE(catalog.error().message.find("profile.trn2: unknown key 'flops_fp8_per_sec'"),
            std::string::npos)
      << catalog.error().message;
}

TEST(Profiles, PublishedSpeedOfAnUnknownShapeIsRejected) {
  std::string text(builtin_profiles_toml());
  const auto at = text.find("\"llama-3.1-405b\" = { value = 969");
  ASSERT_NE(at, std::string::npos);
  text.replace(at, 16, "\"llama-3.1-406b\"");
  auto catalog = parse_profiles(text, "speeds.toml");
  ASSERT_FALSE(catalog);
  EXPECT_NE(catalog.error().message.find("llama-3.1-406b"), std::string::npos)
      << catalog.error().message;
}

TEST(Profiles, MalformedTomlNamesTheLine) {
  auto catalog = parse_profiles("[profile.x]\nvalue = = 3\n", "broken.toml");
  ASSERT_FALSE(catalog);
  EXPECT_EQ(catalog.error().code, errc::invalid_argument);
  EXPECT_EQ(catalog.error().message.rfind("broken.toml:2:", 0), 0U) << catalog.error().message;
}

TEST(Profiles, EmbeddedCopyIsTheSourceFile) {
  std::ifstream in(std::string(BATON_SOURCE_DIR) + "/engine/profiles.toml", std::ios::binary);
  const std::string file{std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
  ASSERT_FALSE(file.empty());
  EXPECT_EQ(builtin_profiles_toml(), file) << "rebuild: the embedded profiles are stale";
}

TEST(Profiles, UnknownNamesGiveClearErrors) {
  const profile_catalog catalog = builtin();
  auto p = catalog.profile("tpu-v9");
  ASSERT_FALSE(p);
  EXPECT_EQ(p.error().code, errc::not_found);
  EXPECT_NE(p.error().message.find("'tpu-v9'"), std::string::npos) << p.error().message;
  EXPECT_NE(p.error().message.find("trn2"), std::string::npos) << p.error().message;
  auto s = catalog.shape("llama-9b");
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code, errc::not_found);
  EXPECT_NE(s.error().message.find("llama-3.1-70b"), std::string::npos) << s.error().message;
  EXPECT_FALSE(parse_precision("fp4"));
}

TEST(Roofline, KvBytesPerTokenMatchSection2) {
  EXPECT_EQ(kv_bytes_per_token(shape_named("llama-3.1-8b"), precision::bf16), 131072U);
  EXPECT_EQ(kv_bytes_per_token(shape_named("llama-3.1-70b"), precision::bf16), 327680U);
  EXPECT_EQ(kv_bytes_per_token(shape_named("llama-3.1-405b"), precision::bf16), 516096U);
  EXPECT_EQ(kv_bytes_per_token(shape_named("llama-3.1-70b"), precision::fp8), 163840U);
}

TEST(Roofline, Trainium2PrefillOf70bPromptMatchesSection6) {
  auto p = predict_prefill(profile_named("trn2"), shape_named("llama-3.1-70b"), 2000, 0,
                           precision::bf16);
  ASSERT_TRUE(p) << p.error().to_string();
  EXPECT_NEAR(p->flops, 2.87e14, 0.01 * 2.87e14);
  EXPECT_NEAR(ms(p->time), 107.0, 0.05 * 107.0);
}

TEST(Roofline, H100DecodeStepMatchesSection6) {
  const std::vector<std::size_t> contexts{2250};
  auto d = predict_decode_step(profile_named("h100"), shape_named("llama-3.1-70b"), contexts,
                               precision::bf16);
  ASSERT_TRUE(d) << d.error().to_string();
  EXPECT_EQ(d->basis, "roofline");
  EXPECT_NEAR(d->bytes_read, 141.8e9, 0.01 * 141.8e9);
  EXPECT_NEAR(ms(d->time), 10.6, 0.05 * 10.6);
  // And section 6(a)'s TTFT: 91 ms plus about 10 ms of overhead.
  auto p = predict_prefill(profile_named("h100"), shape_named("llama-3.1-70b"), 2000, 0,
                           precision::bf16);
  ASSERT_TRUE(p);
  EXPECT_NEAR(ms(p->time), 100.0, 5.0);
}

TEST(Roofline, Cs3DecodeComesFromPublishedSpeed) {
  const std::vector<std::size_t> contexts{2250, 100};
  auto d = predict_decode_step(profile_named("cs3"), shape_named("llama-3.1-70b"), contexts,
                               precision::bf16);
  ASSERT_TRUE(d);
  EXPECT_EQ(d->basis, "published");
  EXPECT_NEAR(ms(d->time), 1000.0 / 450.0, 1e-3);
  // A shape with no published speed scales the nearest one linearly in parameters.
  model_shape custom = shape_named("llama-3.1-8b");
  custom.name = "custom";
  custom.params /= 2;
  auto c = predict_decode_step(profile_named("cs3"), custom, contexts, precision::bf16);
  ASSERT_TRUE(c);
  EXPECT_EQ(c->basis, "extrapolated from llama-3.1-8b");
  EXPECT_NEAR(ms(c->time), 1000.0 / 1800.0 / 2.0, 1e-3);
}

TEST(Roofline, DecodeGrowsWithContextAndBecomesComputeBoundAtLargeBatch) {
  const auto h100 = profile_named("h100");
  const auto shape = shape_named("llama-3.1-70b");
  const std::vector<std::size_t> short_ctx{100};
  const std::vector<std::size_t> long_ctx{100000};
  auto a = predict_decode_step(h100, shape, short_ctx, precision::bf16);
  auto b = predict_decode_step(h100, shape, long_ctx, precision::bf16);
  ASSERT_TRUE(a && b);
  EXPECT_LT(a->time, b->time);
  const std::vector<std::size_t> big_batch(4096, 1);
  auto c = predict_decode_step(h100, shape, big_batch, precision::bf16);
  ASSERT_TRUE(c);
  EXPECT_GT(c->compute_s, c->memory_s);
}

TEST(Roofline, BadInputsFail) {
  const auto cs3 = profile_named("cs3");
  const auto shape = shape_named("llama-3.1-8b");
  auto fp8 = predict_prefill(cs3, shape, 10, 0, precision::fp8);
  ASSERT_FALSE(fp8);
  EXPECT_EQ(fp8.error().code, errc::invalid_argument);
  EXPECT_NE(fp8.error().message.find("fp8"), std::string::npos);
  EXPECT_FALSE(predict_prefill(cs3, shape, 0, 0, precision::bf16));
  EXPECT_FALSE(predict_decode_step(cs3, shape, {}, precision::bf16));
}

}  // namespace
}  // namespace baton::engine
