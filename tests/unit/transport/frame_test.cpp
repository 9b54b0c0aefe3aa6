#include "transport/frame.hpp"

#include <gtest/gtest.h>

#include "transport/frame_mac.hpp"

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
  bad_version[5] = std::byte{frame::version + 1};
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

TEST(Frame, ABatchSplitsIntoItsMessagesAndAnythingElseIsRefused) {
  auto one = frame::encode(frame::kind::message, node_id{7}, bytes_of({1, 2, 3}));
  auto two = frame::encode(frame::kind::message, node_id{7}, bytes_of({}));
  auto three = frame::encode(frame::kind::message, node_id{7}, bytes_of({4, 5, 6, 7, 8}));
  std::vector<std::byte> payload;
  for (const auto* f : {&one, &two, &three}) payload.insert(payload.end(), f->begin(), f->end());
  auto batch = frame::encode(frame::kind::batch, node_id{7}, payload);
  auto outer = frame::decode(batch, 1024);
  ASSERT_TRUE(outer.has_value()) << outer.error().to_string();
  ASSERT_EQ(outer->type, frame::kind::batch);
  auto inner = frame::split_batch(outer->payload, node_id{7}, 16);
  ASSERT_TRUE(inner.has_value()) << inner.error().to_string();
  ASSERT_EQ(inner->size(), 3u);
  EXPECT_EQ(std::vector<std::byte>((*inner)[0].payload.begin(), (*inner)[0].payload.end()),
            bytes_of({1, 2, 3}));
  EXPECT_TRUE((*inner)[1].payload.empty());
  EXPECT_EQ((*inner)[2].payload.size(), 5u);

  EXPECT_FALSE(frame::split_batch(outer->payload, node_id{7}, 4).has_value()) << "over the limit";
  EXPECT_FALSE(frame::split_batch(std::span(payload).first(payload.size() - 1), node_id{7}, 16))
      << "truncated";
  EXPECT_FALSE(frame::split_batch(std::span(payload).first(10), node_id{7}, 16))
      << "inside a header";
  EXPECT_FALSE(frame::split_batch({}, node_id{7}, 16)) << "empty";
  EXPECT_FALSE(frame::split_batch(outer->payload, node_id{8}, 16)) << "another sender's messages";
  auto grant = frame::encode(frame::kind::grant, node_id{7}, std::vector<std::byte>(32));
  EXPECT_FALSE(frame::split_batch(grant, node_id{7}, 64)) << "only messages";
  EXPECT_FALSE(frame::split_batch(batch, node_id{7}, 1024)) << "no batch in a batch";
  EXPECT_FALSE(frame::decode(frame::encode(frame::kind::batch, node_id{7}, bytes_of({1})), 1024))
      << "a batch shorter than one header";
}

frame_key key_of(int fill) {
  frame_key key{};
  key.fill(static_cast<std::byte>(fill));
  return key;
}

/// `bytes` encoded as a frame and sealed under `mac` with `sequence`.
std::vector<std::byte> sealed(frame::kind type, node_id sender, std::span<const std::byte> payload,
                              frame_mac& mac, std::uint64_t sequence) {
  auto f = frame::encode(type, sender, payload);
  f.resize(f.size() + frame::seal_bytes);
  mac.seal(f, sequence);
  return f;
}

TEST(FrameMac, ASealedFrameChecksUnderItsSessionKeyOnly) {
  const auto cluster = key_of(7);
  const auto nonce = fresh_nonce();
  frame_mac sender(session_key(cluster, node_id{9}, nonce));
  const auto payload = bytes_of({1, 2, 3, 4});
  const auto f = sealed(frame::kind::message, node_id{9}, payload, sender, 42);
  auto decoded = frame::decode(f, 16);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().to_string();
  ASSERT_TRUE(decoded->seal.has_value());
  EXPECT_EQ(decoded->seal->sequence, 42u);
  EXPECT_EQ(std::vector<std::byte>(decoded->payload.begin(), decoded->payload.end()), payload);

  frame_mac receiver(session_key(cluster, node_id{9}, nonce));
  EXPECT_TRUE(receiver.check(*decoded->seal));
  frame_mac other_cluster(session_key(key_of(8), node_id{9}, nonce));
  EXPECT_FALSE(other_cluster.check(*decoded->seal));
  frame_mac other_session(session_key(cluster, node_id{9}, fresh_nonce()));
  EXPECT_FALSE(other_session.check(*decoded->seal));
  frame_mac other_sender(session_key(cluster, node_id{10}, nonce));
  EXPECT_FALSE(other_sender.check(*decoded->seal));

  // Every byte is covered: header, payload, sequence and the tag itself.
  for (std::size_t i = 0; i < f.size(); ++i) {
    auto tampered = f;
    tampered[i] ^= std::byte{0x01};
    auto d = frame::decode(tampered, 16);
    if (!d) continue;  // the header no longer parses: refused before any check
    EXPECT_FALSE(d->seal && receiver.check(*d->seal)) << "flipped byte " << i;
  }
}

TEST(FrameMac, SealedFramesHaveTheirLengthCheckedAndBatchesHoldOnlyUnsealedMessages) {
  frame_mac mac(key_of(1));
  auto f = sealed(frame::kind::message, node_id{3}, bytes_of({5, 6}), mac, 1);
  EXPECT_FALSE(frame::decode(std::span(f).first(f.size() - 1), 16).has_value()) << "short seal";
  auto unknown_flag = f;
  unknown_flag[6] = std::byte{0x02};
  EXPECT_FALSE(frame::decode(unknown_flag, 16).has_value());
  auto batch = frame::encode(frame::kind::batch, node_id{3}, f);
  auto outer = frame::decode(batch, 1024);
  ASSERT_TRUE(outer.has_value());
  EXPECT_FALSE(frame::split_batch(outer->payload, node_id{3}, 64)) << "a sealed inner frame";
}

TEST(FrameMac, TheReplayWindowAcceptsEachSequenceOnceAndNothingTooOld) {
  replay_window w;
  EXPECT_FALSE(w.accept(0));
  EXPECT_TRUE(w.accept(1));
  EXPECT_FALSE(w.accept(1));
  EXPECT_TRUE(w.accept(5));
  EXPECT_TRUE(w.accept(3)) << "late, but within the window";
  EXPECT_FALSE(w.accept(3));
  EXPECT_TRUE(w.accept(2));
  EXPECT_TRUE(w.accept(4));
  EXPECT_TRUE(w.accept(5 + replay_window::span));
  EXPECT_FALSE(w.accept(5)) << "slid out of the window";
  EXPECT_TRUE(w.accept(6)) << "the oldest it still holds";
  EXPECT_TRUE(w.accept(100 * replay_window::span));
  EXPECT_FALSE(w.accept(100 * replay_window::span));
  EXPECT_TRUE(w.accept(100 * replay_window::span - 1));
}

TEST(FrameMac, AHelloCarriesItsSessionNonce) {
  frame::hello_payload hello{4096, true, fresh_nonce(), bytes_of({1, 2, 3})};
  auto f = frame::encode(frame::kind::hello, node_id{2}, frame::encode_hello(hello));
  auto decoded = frame::decode(f, 16);
  ASSERT_TRUE(decoded.has_value()) << decoded.error().to_string();
  const auto back = frame::decode_hello(decoded->payload);
  EXPECT_EQ(back.nonce, hello.nonce);
  EXPECT_EQ(back.raw_address, hello.raw_address);
  EXPECT_TRUE(back.answer);
  EXPECT_EQ(back.max_message_bytes, 4096u);
}

}  // namespace
}  // namespace baton::transport
