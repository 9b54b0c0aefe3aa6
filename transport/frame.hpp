// transport/frame.hpp
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "transport/grant_table.hpp"
#include "transport/types.hpp"

/// The on-the-wire frame of every fabric message (internal to the transport).
///
/// Layout, little-endian, 24-byte header then payload:
///   u32 magic 'BTN1' | u8 kind | u8 version (2) | u16 flags | u64 sender node |
///   u32 payload bytes | u32 zero
/// A sealed frame (flags = flag_sealed; transport/frame_mac.hpp) has after its payload a
/// u64 sequence number and a 16-byte tag over everything before the tag.
/// Payloads: hello = u64 the sender's max_message_bytes, u8 answer (1: it answers a hello,
/// 0: it asks for one back), its 16-byte session nonce, then its raw provider address;
/// message = user bytes; batch = message frames (header and payload each) back to back,
/// at least one, sent together to save a provider message each;
/// grant = u64 key, u64 base, u64 offset, u64 length; revoke = u64 key, u64 offset,
/// u64 length; refuse (never sealed) = u8 reason, the refused hello's 16-byte nonce, then
/// the refusing endpoint's raw provider address.
namespace baton::transport::frame {

enum class kind : std::uint8_t {
  hello = 1,
  message = 2,
  grant = 3,
  revoke = 4,
  batch = 5,
  refuse = 6
};

inline constexpr std::size_t header_bytes = 24;
inline constexpr std::uint32_t magic = 0x314e5442;  // "BTN1" read as little-endian
inline constexpr std::uint8_t version = 2;
inline constexpr std::uint16_t flag_sealed = 1;
inline constexpr std::size_t sequence_bytes = 8;
inline constexpr std::size_t tag_bytes = 16;
inline constexpr std::size_t seal_bytes = sequence_bytes + tag_bytes;
inline constexpr std::size_t grant_bytes = 32;
inline constexpr std::size_t revoke_bytes = 24;

/// A sealed frame's seal: its sequence number, the bytes its tag covers, and the tag.
struct seal_view {
  std::uint64_t sequence = 0;
  std::span<const std::byte> covered;
  std::span<const std::byte> tag;
};

/// A frame checked by decode(); `payload` and `seal` borrow the decoded buffer.
struct view {
  kind type = kind::message;
  node_id sender{};
  std::span<const std::byte> payload;
  std::optional<seal_view> seal;  ///< set if the frame is sealed
};

/// Header followed by `payload`.
[[nodiscard]] std::vector<std::byte> encode(kind type, node_id sender,
                                            std::span<const std::byte> payload);

/// Sets the sealed flag in `frame`'s header and writes `sequence` into its last
/// sequence_bytes (an encoded frame followed by room for them).
void mark_sealed(std::span<std::byte> frame, std::uint64_t sequence);

/// Checks magic, version, flags, kind, the length field against `bytes` and the per-kind payload
/// size (messages and batches at most `max_message_bytes`); errc::invalid_argument says
/// what is wrong.
[[nodiscard]] expected<view> decode(std::span<const std::byte> bytes,
                                    std::size_t max_message_bytes);

/// The message frames of a batch's payload, each checked as decode() checks a frame; all
/// must be unsealed messages from `sender` (the batch's seal covers them), or the whole
/// batch is refused.
[[nodiscard]] expected<std::vector<view>> split_batch(std::span<const std::byte> payload,
                                                      node_id sender,
                                                      std::size_t max_message_bytes);

struct hello_payload {
  std::uint64_t max_message_bytes = 0;
  /// An answer to the peer's hello. A hello that is not one is always answered: the
  /// peer's connection, and the hello it had from us on it, may be gone (reset_peer).
  bool answer = false;
  std::array<std::byte, 16> nonce{};  ///< the sender's session nonce (frame_mac.hpp)
  std::vector<std::byte> raw_address;
};
[[nodiscard]] std::vector<std::byte> encode_hello(const hello_payload& hello);
[[nodiscard]] hello_payload decode_hello(std::span<const std::byte> payload);

/// Why a hello was refused (frame_mac.hpp): it was not sealed where seals are required, or
/// its seal does not verify (another cluster's key).
enum class refusal : std::uint8_t { unsealed = 1, bad_seal = 2 };
struct refuse_payload {
  refusal reason = refusal::unsealed;
  std::array<std::byte, 16> nonce{};
  std::vector<std::byte> raw_address;
};
[[nodiscard]] std::vector<std::byte> encode_refuse(const refuse_payload& refuse);
/// Empty if the reason is unknown.
[[nodiscard]] std::optional<refuse_payload> decode_refuse(std::span<const std::byte> payload);

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
