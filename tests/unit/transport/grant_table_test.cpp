#include "transport/grant_table.hpp"

#include <gtest/gtest.h>

namespace baton::transport {
namespace {

constexpr node_id owner{0x1234};

TEST(GrantTable, AcceptsOnlyRangesInsideAGrant) {
  grant_table table(8);
  ASSERT_TRUE(table.add(owner, {7, 0x1000, 4096, 8192}).has_value());
  auto inside = table.check({owner, 7, 4096, 8192});
  ASSERT_TRUE(inside.has_value());
  EXPECT_EQ(inside->base, 0x1000u);
  EXPECT_TRUE(table.check({owner, 7, 8192, 4096}).has_value());
  EXPECT_FALSE(table.check({owner, 7, 0, 4096}).has_value());         // before
  EXPECT_FALSE(table.check({owner, 7, 8192, 8192}).has_value());      // runs past the end
  EXPECT_FALSE(table.check({owner, 8, 4096, 16}).has_value());        // unknown key
  EXPECT_FALSE(table.check({node_id{99}, 7, 4096, 16}).has_value());  // unknown node
  EXPECT_FALSE(table.check({owner, 7, 4096, 0}).has_value());         // empty
  auto wraps = table.check({owner, 7, ~std::uint64_t{0} - 1, 4});
  ASSERT_FALSE(wraps.has_value());
  EXPECT_EQ(wraps.error().code, errc::invalid_argument);
}

TEST(GrantTable, RevokeAndForgetDropGrants) {
  grant_table table(8);
  ASSERT_TRUE(table.add(owner, {7, 0, 0, 4096}).has_value());
  ASSERT_TRUE(table.add(owner, {9, 0, 0, 4096}).has_value());
  table.revoke(owner, 7, 0, 4096);
  EXPECT_FALSE(table.check({owner, 7, 0, 16}).has_value());
  EXPECT_TRUE(table.check({owner, 9, 0, 16}).has_value());
  table.forget(owner);
  EXPECT_EQ(table.size(), 0u);
}

TEST(GrantTable, LimitsGrantsPerNode) {
  grant_table table(2);
  ASSERT_TRUE(table.add(owner, {1, 0, 0, 1}).has_value());
  ASSERT_TRUE(table.add(owner, {2, 0, 0, 1}).has_value());
  auto third = table.add(owner, {3, 0, 0, 1});
  ASSERT_FALSE(third.has_value());
  EXPECT_EQ(third.error().code, errc::overloaded);
  EXPECT_FALSE(table.add(owner, {4, 0, ~std::uint64_t{0}, 2}).has_value());  // wrapping
}

}  // namespace
}  // namespace baton::transport
