#include "transport/frame.hpp"

#include <gtest/gtest.h>

namespace baton::transport {
namespace {

std::vector<std::byte> bytes_of(std::initializer_list<int> values) {
  std::vector<std::byte> out;
  for (int v : values) out.push_back(static_cast<std::byte>(v));
  return out;
}

TEST(Frame, RoundTripsAMessage) {
  auto payload = bytes_of({1, 2, 3});
  auto encoded = frame::encode(frame::kind::message, node_id{0xabcdef}, payload);
  ASSERT_EQ(encoded.size(), frame::header_bytes + 3);
  auto decoded = frame::decode(encoded, 16);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().to_string();
  EXPECT_EQ(decoded->type, frame::kind::message);
  EXPECT_EQ(decoded->sender, node_id{0xabcdef});
  EXPECT_EQ(std::vector<std::byte>(decoded->payload.begin(), decoded->payload.end()), payload);
}

TEST(Frame, RejectsTruncatedOversizedAndMalformedFrames) {
  auto good = frame::encode(frame::kind::message, node_id{1}, bytes_of({1, 2, 3, 4}));
  auto truncated = good;
  truncated.resize(truncated.size() - 1);  // length field no longer matches
  EXPECT_FALSE(frame::decode(truncated, 16).has_value());
  EXPECT_FALSE(frame::decode(std::span(good).first(10), 16).has_value());  // short header
  EXPECT_FALSE(frame::decode(good, 3).has_value());                        // oversized
  auto bad_magic = good;
  bad_magic[0] = std::byte{0};
  EXPECT_FALSE(frame::decode(bad_magic, 16).has_value());
  auto bad_kind = good;
  bad_kind[4] = std::byte{9};
  EXPECT_FALSE(frame::decode(bad_kind, 16).has_value());
  auto bad_version = good;
  bad_version[5] = std::byte{2};
  EXPECT_FALSE(frame::decode(bad_version, 16).has_value());
  auto short_grant = frame::encode(frame::kind::grant, node_id{1}, bytes_of({1, 2}));
  auto err = frame::decode(short_grant, 16);
  ASSERT_FALSE(err.has_value());
  EXPECT_EQ(err.error().code, errc::invalid_argument);
}

TEST(Frame, RoundTripsGrantsAndRevokes) {
  received_grant g{0x1122334455667788ull, 0x7f0000001000ull, 4096, 1 << 20};
  auto encoded = frame::encode(frame::kind::grant, node_id{5}, frame::encode_grant(g));
  auto decoded = frame::decode(encoded, 0);
  ASSERT_TRUE(decoded.has_value());
  auto back = frame::decode_grant(decoded->payload);
  EXPECT_EQ(back.key, g.key);
  EXPECT_EQ(back.base, g.base);
  EXPECT_EQ(back.offset, g.offset);
  EXPECT_EQ(back.length, g.length);
  auto r = frame::decode_revoke(frame::encode_revoke({9, 8, 7}));
  EXPECT_EQ(r.key, 9u);
  EXPECT_EQ(r.offset, 8u);
  EXPECT_EQ(r.length, 7u);
}

}  // namespace
}  // namespace baton::transport
