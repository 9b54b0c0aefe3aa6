#include "base/error.hpp"

#include <gtest/gtest.h>

namespace baton {
namespace {

expected<int> parse_positive(int value) {
  if (value <= 0) return fail(errc::invalid_argument, "value: expected > 0");
  return value;
}

TEST(Error, CarriesCodeAndMessage) {
  auto ok = parse_positive(3);
  ASSERT_TRUE(ok.has_value());
  EXPECT_EQ(*ok, 3);

  auto bad = parse_positive(-1);
  ASSERT_FALSE(bad.has_value());
  EXPECT_EQ(bad.error().code, errc::invalid_argument);
  EXPECT_EQ(bad.error().to_string(), "invalid_argument: value: expected > 0");
}

TEST(Error, ContextIsPrefixed) {
  auto inner = parse_positive(0);
  ASSERT_FALSE(inner.has_value());
  expected<int> outer = fail(inner.error(), "cluster.toml: ");
  EXPECT_EQ(outer.error().message, "cluster.toml: value: expected > 0");
  EXPECT_EQ(outer.error().code, errc::invalid_argument);
}

TEST(Error, EveryCodeHasAName) {
  for (auto code : {errc::overloaded, errc::timed_out, errc::disconnected, errc::invalid_argument,
                    errc::not_found, errc::failed}) {
    EXPECT_NE(to_string(code), "unknown");
  }
}

}  // namespace
}  // namespace baton
