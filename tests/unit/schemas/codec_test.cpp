// The codec's contract: every message round-trips; damaged, oversized, misaligned,
// wrong-discriminant and random frames are rejected with a counted error, never a crash.
// This test may include generated Cap'n Proto headers to craft bad frames; Baton's own
// code outside schemas/ may not.
#include "schemas/codec.hpp"

#include <cstring>
#include <random>

#include <capnp/message.h>
#include <capnp/schema.h>
#include <capnp/serialize.h>
#include <fmt/format.h>
#include <gtest/gtest.h>

#include "schemas/frame.capnp.h"
#include "schemas/membership.capnp.h"
#include "schemas/samples.hpp"

namespace baton::wire {
namespace {

std::vector<std::uint64_t> frame_of(capnp::MessageBuilder& builder) {
  auto flat = capnp::messageToFlatArray(builder);
  std::vector<std::uint64_t> words(1 + flat.size());
  words[0] = std::uint64_t{frame_magic} | (std::uint64_t{wire_version} << 32);
  std::memcpy(words.data() + 1, flat.begin(), flat.size() * sizeof(capnp::word));
  return words;
}

std::span<const std::byte> as_bytes(const std::vector<std::uint64_t>& words) {
  return std::as_bytes(std::span<const std::uint64_t>(words));
}

TEST(Codec, EveryMessageRoundTrips) {
  decoder dec;
  const auto frames = sample_frames();
  ASSERT_EQ(frames.size(), std::variant_size_v<body>);
  for (std::size_t i = 0; i < frames.size(); ++i) {
    ASSERT_EQ(frames[i].body.index(), i);
    auto encoded = encode(frames[i]);
    ASSERT_TRUE(encoded) << encoded.error().to_string();
    auto decoded = dec.decode(encoded->bytes());
    ASSERT_TRUE(decoded) << body_name(frames[i].body) << ": " << decoded.error().to_string();
    EXPECT_EQ(*decoded, frames[i]) << body_name(frames[i].body);
  }
  EXPECT_EQ(dec.accepted(), frames.size());
  EXPECT_EQ(dec.rejected_total(), 0u);
}

TEST(Codec, KvDescriptorCarriesTheFabricNode) {
  frame f = sample_frames()[5];  // prefill
  ASSERT_NE(std::get<prefill>(f.body).target.fabric_node, 0u);
  auto encoded = encode(f);
  ASSERT_TRUE(encoded) << encoded.error().to_string();
  auto decoded = decoder{}.decode(encoded->bytes());
  ASSERT_TRUE(decoded) << decoded.error().to_string();
  EXPECT_EQ(std::get<prefill>(decoded->body).target.fabric_node,
            std::get<prefill>(f.body).target.fabric_node);
}

TEST(Codec, IsMembershipTellsMembershipFramesFromEveryOtherKind) {
  for (const auto& f : sample_frames()) {
    auto encoded = encode(f);
    ASSERT_TRUE(encoded);
    const bool membership =
        std::holds_alternative<join>(f.body) || std::holds_alternative<join_reply>(f.body) ||
        std::holds_alternative<heartbeat>(f.body) || std::holds_alternative<leave>(f.body);
    EXPECT_EQ(is_membership(encoded->bytes()), membership) << body_name(f.body);
    // Damaged: never an exception, never a membership frame it cannot read.
    EXPECT_FALSE(is_membership(encoded->bytes().first(16))) << body_name(f.body);
    auto words = encoded->words;
    words[0] ^= 1;  // magic
    EXPECT_FALSE(is_membership(as_bytes(words))) << body_name(f.body);
  }
  const std::vector<std::uint64_t> garbage(8, 0x5a5a5a5a5a5a5a5aULL);
  EXPECT_FALSE(is_membership(as_bytes(garbage)));
}

TEST(Codec, EveryTruncationIsRejectedAndCounted) {
  decoder dec;
  for (const auto& f : sample_frames()) {
    auto encoded = encode(f);
    ASSERT_TRUE(encoded);
    for (std::size_t words = 0; words < encoded->words.size(); ++words) {
      auto bytes = encoded->bytes().first(words * 8);
      EXPECT_FALSE(dec.decode(bytes)) << body_name(f.body) << " cut to " << words << " words";
    }
  }
  EXPECT_EQ(dec.accepted(), 0u);
  EXPECT_GT(dec.rejected(reject_reason::bad_size), 0u);
  EXPECT_GT(dec.rejected(reject_reason::malformed), 0u);
}

TEST(Codec, MisalignedBufferIsRejected) {
  decoder dec;
  auto encoded = encode(sample_frames().front());
  ASSERT_TRUE(encoded);
  std::vector<std::uint64_t> shifted(encoded->words.size() + 1);
  auto* base = reinterpret_cast<std::byte*>(shifted.data()) + 4;
  std::memcpy(base, encoded->words.data(), encoded->words.size() * 8);
  auto result = dec.decode(std::span<const std::byte>(base, encoded->words.size() * 8));
  ASSERT_FALSE(result);
  EXPECT_EQ(dec.rejected(reject_reason::misaligned), 1u);
  EXPECT_NE(result.error().message.find("aligned"), std::string::npos);
}

TEST(Codec, OversizedFrameIsRejected) {
  codec_limits small;
  small.max_frame_bytes = 256;
  decoder dec(small);
  frame f = sample_frames()[4];  // admit
  std::get<admit>(f.body).tokens.assign(1000, 5);
  std::get<admit>(f.body).prompt_length = 1000;
  auto encoded = encode(f);
  ASSERT_TRUE(encoded);
  EXPECT_FALSE(dec.decode(encoded->bytes()));
  EXPECT_EQ(dec.rejected(reject_reason::bad_size), 1u);
  // And the sender refuses to build what its peers would refuse.
  EXPECT_FALSE(encode(f, small));
}

TEST(Codec, WrongMagicAndVersionAreRejected) {
  decoder dec;
  auto encoded = encode(sample_frames().front());
  ASSERT_TRUE(encoded);
  auto bad_magic = encoded->words;
  bad_magic[0] ^= 1;
  EXPECT_FALSE(dec.decode(as_bytes(bad_magic)));
  EXPECT_EQ(dec.rejected(reject_reason::bad_header), 1u);
  auto bad_version = encoded->words;
  bad_version[0] += std::uint64_t{1} << 32;
  auto result = dec.decode(as_bytes(bad_version));
  ASSERT_FALSE(result);
  EXPECT_EQ(dec.rejected(reject_reason::bad_version), 1u);
  EXPECT_NE(result.error().message.find(fmt::format("wire version {}", wire_version + 1)),
            std::string::npos)
      << result.error().message;
}

TEST(Codec, UnknownUnionMemberIsRejected) {
  capnp::MallocMessageBuilder builder;
  auto env = builder.initRoot<gen::Envelope>();
  env.initSource().setNode("a");
  env.getBody().initLeave().setReason("x");
  auto words = frame_of(builder);
  // The root struct's data section starts after the frame header, the one-entry segment
  // table and the root pointer; the union discriminant sits at its schema offset there.
  const auto offset =
      capnp::Schema::from<gen::Envelope::Body>().getProto().getStruct().getDiscriminantOffset();
  std::uint16_t unknown = 40;
  std::memcpy(reinterpret_cast<std::byte*>(words.data()) + 24 + 2 * offset, &unknown, 2);
  decoder dec;
  auto result = dec.decode(as_bytes(words));
  ASSERT_FALSE(result);
  EXPECT_EQ(dec.rejected(reject_reason::bad_discriminant), 1u) << result.error().message;
  EXPECT_NE(result.error().message.find("unknown union member 40"), std::string::npos);
}

TEST(Codec, UnknownEnumValueIsRejected) {
  capnp::MallocMessageBuilder builder;
  auto env = builder.initRoot<gen::Envelope>();
  env.initSource().setNode("router-0");
  auto member = env.getBody().initJoin().initMember();
  member.setNode("n");
  member.setKind(static_cast<gen::NodeKind>(9));
  decoder dec;
  auto result = dec.decode(as_bytes(frame_of(builder)));
  ASSERT_FALSE(result);
  EXPECT_EQ(dec.rejected(reject_reason::bad_discriminant), 1u);
  EXPECT_NE(result.error().message.find("join.member: unknown enum value 9"), std::string::npos);
}

TEST(Codec, FieldBoundsAreChecked) {
  decoder dec;
  auto reject_field = [&](frame f, std::string_view field) {
    // encode() refuses it too, so build it unchecked through a permissive limit...
    codec_limits loose;
    loose.max_name_bytes = 1u << 20;
    loose.max_blocks = 1u << 30;
    auto encoded = encode(f, loose);
    if (!encoded) {  // ...unless even the loose limits refuse it: then encode is the check.
      EXPECT_NE(encoded.error().message.find(field), std::string::npos) << encoded.error().message;
      return;
    }
    auto result = dec.decode(encoded->bytes());
    ASSERT_FALSE(result) << field;
    EXPECT_NE(result.error().message.find(field), std::string::npos) << result.error().message;
  };
  auto frames = sample_frames();
  frame long_name = frames[0];
  long_name.source.node.assign(200, 'a');
  reject_field(long_name, "source.node");

  frame bad_kv = frames[5];  // prefill
  std::get<prefill>(bad_kv.body).target.length += 1;
  reject_field(bad_kv, "prefill.target");

  frame bad_checksums = frames[5];
  std::get<prefill>(bad_checksums.body).target.checksums.pop_back();
  reject_field(bad_checksums, "prefill.target");

  frame bad_prompt = frames[4];  // admit
  std::get<admit>(bad_prompt.body).prompt_length = 99;
  reject_field(bad_prompt, "admit.tokens");

  frame nan_temperature = frames[4];
  std::get<admit>(nan_temperature.body).params.temperature = std::nanf("");
  reject_field(nan_temperature, "admit.sampling");

  frame overflow = frames[7];  // tokens
  std::get<token_batch>(overflow.body).first_position = 0xffffffffu;
  reject_field(overflow, "tokens.firstPosition");

  frame bad_char = frames[0];
  bad_char.target.actor = "dec ode";
  reject_field(bad_char, "target.actor");
  EXPECT_EQ(dec.accepted(), 0u);
}

TEST(Codec, PointerAmplificationHitsTheTraversalLimit) {
  // A list of 100 structs whose pointers all target the same large text: cheap to send,
  // expensive to read. The traversal limit (a small multiple of the frame) stops it.
  capnp::MallocMessageBuilder builder(4096);  // one segment: no far pointers to follow
  auto env = builder.initRoot<gen::Envelope>();
  env.initSource().setNode("a");
  auto hb = env.getBody().initHeartbeat();
  auto updates = hb.initUpdates(100);
  std::string big(4000, 'x');
  updates[0].setNode(big);
  auto words = frame_of(builder);
  // Point every update's node at update 0's text. Elements of the struct list are laid
  // out inline, 2 data words then 5 pointers each (node first), so element i's node
  // pointer sits 7i words after element 0's.
  std::size_t first_ptr = 0;
  for (std::size_t w = 3; w < words.size(); ++w) {
    // The first non-zero pointer word inside the list body belongs to update 0's node.
    if ((words[w] & 3) == 1 && (words[w] >> 35) == big.size() + 1) {
      first_ptr = w;
      break;
    }
  }
  ASSERT_NE(first_ptr, 0u) << "did not find the text pointer";
  const std::size_t stride = 7;  // words per Member element (2 data + 5 pointers)
  for (std::size_t i = 1; i < 100; ++i) {
    const std::size_t w = first_ptr + i * stride;
    // A list pointer's offset is relative to the pointer's own position.
    const auto base_offset = static_cast<std::int32_t>(words[first_ptr] & 0xffffffffu) >> 2;
    const std::int64_t target = static_cast<std::int64_t>(first_ptr) + 1 + base_offset;
    const auto rel = static_cast<std::int32_t>(target - static_cast<std::int64_t>(w) - 1);
    words[w] =
        (words[first_ptr] & 0xffffffff00000000ULL) | (static_cast<std::uint32_t>(rel) << 2) | 1u;
  }
  decoder dec;
  auto result = dec.decode(as_bytes(words));
  ASSERT_FALSE(result);
  EXPECT_EQ(dec.rejected(reject_reason::limit_exceeded), 1u) << result.error().message;
}

TEST(Codec, RandomBytesNeverCrash) {
  const std::uint64_t seed = 20261129;
  std::mt19937_64 rng(seed);
  decoder dec;
  auto valid = encode(sample_frames()[5]);  // prefill
  ASSERT_TRUE(valid);
  for (int round = 0; round < 20000; ++round) {
    std::vector<std::uint64_t> words = valid->words;
    if (round % 2 == 0) {
      // Random garbage behind a valid header.
      for (std::size_t i = 1; i < words.size(); ++i) words[i] = rng();
    } else {
      // A valid frame with a few bits flipped.
      for (int flips = 0; flips < 4; ++flips) {
        words[rng() % words.size()] ^= std::uint64_t{1} << (rng() % 64);
      }
    }
    (void)dec.decode(as_bytes(words));
  }
  EXPECT_EQ(dec.accepted() + dec.rejected_total(), 20000u) << "seed " << seed;
  EXPECT_GT(dec.rejected_total(), 10000u) << "seed " << seed;
}

}  // namespace
}  // namespace baton::wire
