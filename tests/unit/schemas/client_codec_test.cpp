// The native client protocol's codec (schemas/client_codec.hpp): every message
// round-trips, malformed bytes are refused with a precise error, random bytes never crash.
#include "schemas/client_codec.hpp"

#include <cstring>
#include <random>

#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "schemas/client.capnp.h"
#include "schemas/samples.hpp"

namespace baton::wire {
namespace {

// ---- codec -------------------------------------------------------------------------

std::vector<wire::client_message> sample_messages() {
  return wire::sample_client_messages();
}

std::span<const std::byte> bytes_of(const kj::Array<capnp::word>& flat) {
  return {reinterpret_cast<const std::byte*>(flat.begin()), flat.size() * sizeof(capnp::word)};
}

std::span<const std::byte> message_of(const std::vector<std::byte>& frame) {
  return std::span(frame).subspan(wire::client_length_bytes);
}

TEST(ClientCodec, EveryMessageRoundTrips) {
  const auto messages = sample_messages();
  ASSERT_EQ(messages.size(), std::variant_size_v<wire::client_message>);
  for (std::size_t i = 0; i < messages.size(); ++i) {
    ASSERT_EQ(messages[i].index(), i);
    auto frame = wire::encode_client_frame(messages[i]);
    ASSERT_TRUE(frame) << frame.error().to_string();
    auto length = wire::client_frame_length(std::span(*frame).first<wire::client_length_bytes>());
    ASSERT_TRUE(length) << length.error().to_string();
    EXPECT_EQ(*length + wire::client_length_bytes, frame->size());
    auto decoded = wire::decode_client_message(message_of(*frame));
    ASSERT_TRUE(decoded) << wire::client_message_name(messages[i]) << ": "
                         << decoded.error().to_string();
    EXPECT_EQ(*decoded, messages[i]) << wire::client_message_name(messages[i]);
  }
}

TEST(ClientCodec, EveryTruncationIsRejected) {
  for (const auto& m : sample_messages()) {
    auto frame = wire::encode_client_frame(m);
    ASSERT_TRUE(frame);
    const auto body = message_of(*frame);
    for (std::size_t bytes = 0; bytes < body.size(); ++bytes) {
      auto result = wire::decode_client_message(body.first(bytes));
      ASSERT_FALSE(result) << wire::client_message_name(m) << " cut to " << bytes;
      EXPECT_EQ(result.error().code, errc::invalid_argument);
    }
  }
}

TEST(ClientCodec, UnalignedBytesDecode) {
  auto frame = wire::encode_client_frame(sample_messages()[3]);
  ASSERT_TRUE(frame);
  std::vector<std::byte> shifted(frame->size() + 1);
  std::memcpy(shifted.data() + 1, frame->data(), frame->size());
  auto decoded =
      wire::decode_client_message(std::span(shifted).subspan(1 + wire::client_length_bytes));
  ASSERT_TRUE(decoded) << decoded.error().to_string();
  EXPECT_EQ(*decoded, sample_messages()[3]);
}

TEST(ClientCodec, FrameLengthIsBounded) {
  const auto length_of = [](std::uint32_t value) {
    std::array<std::byte, 4> prefix{};
    std::memcpy(prefix.data(), &value, 4);
    return wire::client_frame_length(prefix);
  };
  EXPECT_FALSE(length_of(0));
  EXPECT_FALSE(length_of(8));
  EXPECT_FALSE(length_of(21));
  EXPECT_FALSE(length_of((1u << 20) + 8));
  auto big = length_of(0x20544547);  // "GET " read as a length
  ASSERT_FALSE(big);
  EXPECT_NE(big.error().message.find("frame length 542393671"), std::string::npos)
      << big.error().message;
  EXPECT_EQ(length_of(1u << 20).value_or(0), 1u << 20);
}

TEST(ClientCodec, FieldBoundsAreCheckedOnBothSides) {
  wire::client_limits limits;
  limits.max_prompt_bytes = 16;
  const auto refused = [&](wire::client_message m, std::string_view field) {
    auto encoded = wire::encode_client_frame(m, limits);
    ASSERT_FALSE(encoded) << field;
    EXPECT_NE(encoded.error().message.find(field), std::string::npos) << encoded.error().message;
    // A permissive sender's bytes meet the same check on decode.
    wire::client_limits loose;
    loose.max_prompt_bytes = 1u << 20;
    auto frame = wire::encode_client_frame(m, loose);
    if (!frame) return;  // not expressible even loosely (sampling, tokens): encode-side only
    auto decoded = wire::decode_client_message(message_of(*frame), limits);
    ASSERT_FALSE(decoded) << field;
    EXPECT_EQ(decoded.error().code, errc::invalid_argument);
    EXPECT_NE(decoded.error().message.find(field), std::string::npos) << decoded.error().message;
  };
  refused(wire::generate_request{1, std::string(17, 'x'), 0, 0, {}, false, 0}, "generate.prompt");
  refused(wire::generate_request{1, "", 0, 0, {-1.0f, 1.0f, 0}, false, 0}, "temperature -1");
  refused(wire::generate_request{1, "", 0, 0, {0.0f, 0.0f, 0}, false, 0}, "topP 0");
  refused(wire::generate_request{1, "", 0, 0, {0.0f, 1.0f, 0}, true, 0}, "hasSeed with seed 0");
  refused(wire::token_chunk{1, 0, {}, ""}, "tokens.tokens: empty");
  refused(wire::token_chunk{1, 0xFFFFFFFF, {1, 2}, ""}, "tokens.firstPosition");
  refused(wire::accepted{1, {}, 1, 1, "", "bad node", "d", "p"}, "accepted.prefillNode");
  refused(wire::rejected{1, errc::failed, std::string(70000, 'm')}, "rejected.message");
}

TEST(ClientCodec, DecodeRejectsWhatEncodeCannotProduce) {
  // Unknown enum value.
  {
    capnp::MallocMessageBuilder builder;
    auto f = builder.initRoot<wire::gen::ClientMessage>().initFinished();
    f.setReason(static_cast<wire::gen::FinishReason>(9));
    auto flat = capnp::messageToFlatArray(builder);
    auto result = wire::decode_client_message(bytes_of(flat));
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message.find("finished.reason: unknown enum value 9"),
              std::string::npos)
        << result.error().message;
  }
  // Unknown union member: patch the discriminant at its schema offset in the root's data
  // section (after the one-entry segment table and the root pointer).
  {
    capnp::MallocMessageBuilder builder;
    builder.initRoot<wire::gen::ClientMessage>().initCancel().setClientTag(3);
    auto flat = capnp::messageToFlatArray(builder);
    const auto offset = capnp::Schema::from<wire::gen::ClientMessage>()
                            .getProto()
                            .getStruct()
                            .getDiscriminantOffset();
    std::uint16_t unknown = 40;
    std::memcpy(flat.asBytes().begin() + 16 + 2 * offset, &unknown, 2);
    auto result = wire::decode_client_message(bytes_of(flat));
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message.find("unknown union member 40"), std::string::npos)
        << result.error().message;
  }
  // Trailing bytes after a whole message.
  {
    auto frame = wire::encode_client_frame(wire::cancel_request{1});
    ASSERT_TRUE(frame);
    frame->resize(frame->size() + 8);
    auto result = wire::decode_client_message(message_of(*frame));
    ASSERT_FALSE(result);
    EXPECT_NE(result.error().message.find("trail"), std::string::npos) << result.error().message;
  }
}

TEST(ClientCodec, RandomBytesNeverCrash) {
  std::mt19937_64 rng(20261129);
  std::size_t accepted = 0;
  for (int i = 0; i < 20000; ++i) {
    auto frame = wire::encode_client_frame(sample_messages()[static_cast<std::size_t>(i) % 6]);
    ASSERT_TRUE(frame);
    auto body = std::vector<std::byte>(message_of(*frame).begin(), message_of(*frame).end());
    for (int flips = 0; flips < 1 + i % 4; ++flips) {
      body[rng() % body.size()] = static_cast<std::byte>(rng());
    }
    auto decoded = wire::decode_client_message(body);
    if (!decoded) {
      EXPECT_EQ(decoded.error().code, errc::invalid_argument);
      continue;
    }
    ++accepted;
    auto again = wire::encode_client_frame(*decoded);
    ASSERT_TRUE(again) << again.error().to_string();
    auto twice = wire::decode_client_message(message_of(*again));
    ASSERT_TRUE(twice);
    EXPECT_EQ(*twice, *decoded);
  }
  EXPECT_GT(accepted, 0u);
}

}  // namespace
}  // namespace baton::wire
