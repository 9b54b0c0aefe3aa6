// transport/frame.hpp
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "transport/grant_table.hpp"
#include "transport/types.hpp"

/// The on-the-wire frame of every fabric message (internal to the transport).
///
/// Layout, little-endian, 24-byte header then payload:
///   u32 magic 'BTN1' | u8 kind | u8 version (1) | u16 zero | u64 sender node |
///   u32 payload bytes | u32 zero
/// Payloads: hello = u64 the sender's max_message_bytes, u8 answer (1: it answers a hello,
/// 0: it asks for one back), then its raw provider address;
/// message = user bytes; batch = message frames (header and payload each) back to back,
/// at least one, sent together to save a provider message each;
/// grant = u64 key, u64 base, u64 offset, u64 length; revoke = u64 key, u64 offset,
/// u64 length.
namespace baton::transport::frame {

enum class kind : std::uint8_t { hello = 1, message = 2, grant = 3, revoke = 4, batch = 5 };

inline constexpr std::size_t header_bytes = 24;
inline constexpr std::uint32_t magic = 0x314e5442;  // "BTN1" read as little-endian
inline constexpr std::uint8_t version = 1;
inline constexpr std::size_t grant_bytes = 32;
inline constexpr std::size_t revoke_bytes = 24;

/// A frame checked by decode(); `payload` borrows the decoded buffer.
struct view {
  kind type = kind::message;
  node_id sender{};
  std::span<const std::byte> payload;
};

/// Header followed by `payload`.
[[nodiscard]] std::vector<std::byte> encode(kind type, node_id sender,
                                            std::span<const std::byte> payload);

/// Checks magic, version, kind, the length field against `bytes` and the per-kind payload
/// size (messages and batches at most `max_message_bytes`); errc::invalid_argument says
/// what is wrong.
[[nodiscard]] expected<view> decode(std::span<const std::byte> bytes,
                                    std::size_t max_message_bytes);

/// The message frames of a batch's payload, each checked as decode() checks a frame; all
/// must be messages from `sender`, or the whole batch is refused.
[[nodiscard]] expected<std::vector<view>> split_batch(std::span<const std::byte> payload,
                                                      node_id sender,
                                                      std::size_t max_message_bytes);

struct hello_payload {
  std::uint64_t max_message_bytes = 0;
  /// An answer to the peer's hello. A hello that is not one is always answered: the
  /// peer's connection, and the hello it had from us on it, may be gone (reset_peer).
  bool answer = false;
  std::vector<std::byte> raw_address;
};
[[nodiscard]] std::vector<std::byte> encode_hello(const hello_payload& hello);
[[nodiscard]] hello_payload decode_hello(std::span<const std::byte> payload);

[[nodiscard]] std::vector<std::byte> encode_grant(const received_grant& grant);
[[nodiscard]] received_grant decode_grant(std::span<const std::byte> payload);

struct revoke_range {
  std::uint64_t key = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};
[[nodiscard]] std::vector<std::byte> encode_revoke(const revoke_range& range);
[[nodiscard]] revoke_range decode_revoke(std::span<const std::byte> payload);

}  // namespace baton::transport::frame
