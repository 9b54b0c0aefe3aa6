#pragma once

// The one codec between bytes and frames (docs/wire-format.md). Nothing else in Baton
// touches Cap'n Proto readers: decode() traverses the whole message under Cap'n Proto's
// limits, checks every discriminant, enum, length and index against its bound, and
// returns plain structs, or an error that says which field was wrong.

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "schemas/frame.hpp"

namespace baton::wire {

/// Bounds every decoded (and encoded) frame must respect.
struct codec_limits {
  std::size_t max_frame_bytes = 4u << 20;
  std::uint32_t max_tokens = 1u << 18;  ///< token ids in one message
  std::uint32_t max_blocks = 1u << 16;  ///< block ids or checksums in one message
  std::uint32_t max_members = 4096;     ///< membership entries in one message
  std::uint32_t max_roles = 4;
  std::uint32_t max_name_bytes = 128;   ///< node and actor names, addresses
  std::uint32_t max_text_bytes = 4096;  ///< free-form reasons and messages
  std::uint32_t max_auth_tag_bytes = 64;
  std::uint32_t max_segments = 64;
  int nesting_limit = 16;
};

/// Bytes of the frame header that precedes the Cap'n Proto message.
inline constexpr std::size_t frame_header_bytes = 8;
/// "BATN" read as a little-endian 32-bit word.
inline constexpr std::uint32_t frame_magic = 0x4E544142;

/// Why a frame was rejected; each has its own counter.
enum class reject_reason : std::uint8_t {
  misaligned,        ///< the buffer does not start on an 8-byte boundary
  bad_size,          ///< too short, too long, or not a whole number of words
  bad_header,        ///< wrong magic or reserved bits set
  bad_version,       ///< a wire version this build does not speak
  malformed,         ///< Cap'n Proto framing or pointers are invalid, or bytes trail
  limit_exceeded,    ///< traversal, nesting or segment limit hit
  bad_discriminant,  ///< unknown union member or enum value
  out_of_bounds,     ///< a length, count, index or value outside its bound
};
inline constexpr std::size_t reject_reason_count = 8;

[[nodiscard]] std::string_view to_string(reject_reason reason) noexcept;

/// An encoded frame in 8-byte-aligned storage, ready to post on an endpoint.
struct encoded_frame {
  std::vector<std::uint64_t> words;
  [[nodiscard]] std::span<const std::byte> bytes() const noexcept {
    return std::as_bytes(std::span<const std::uint64_t>(words));
  }
};

/// Encodes `f`. Fails with invalid_argument if `f` breaks `limits`, so a frame this node
/// sends is always one its peers accept.
[[nodiscard]] expected<encoded_frame> encode(const frame& f, const codec_limits& limits = {});

/// Whether `bytes` holds a membership frame (join, joinReply, heartbeat or leave): a
/// cheap look at the body's tag, for routing. It checks nothing else: decode() decides
/// whether the frame is valid. False for anything it cannot read.
[[nodiscard]] bool is_membership(std::span<const std::byte> bytes) noexcept;

/// Decodes untrusted frames and counts what it rejects. decode() may be called from one
/// thread at a time; the counters may be read from any thread.
class decoder {
 public:
  explicit decoder(codec_limits limits = {}) : limits_(limits) {}

  /// Decodes one frame. `bytes` must start on an 8-byte boundary and hold exactly one
  /// frame; it is not referenced after the call returns.
  [[nodiscard]] expected<frame> decode(std::span<const std::byte> bytes);

  [[nodiscard]] std::uint64_t accepted() const noexcept { return accepted_.load(); }
  [[nodiscard]] std::uint64_t rejected(reject_reason reason) const noexcept {
    return rejected_[static_cast<std::size_t>(reason)].load();
  }
  [[nodiscard]] std::uint64_t rejected_total() const noexcept;
  [[nodiscard]] const codec_limits& limits() const noexcept { return limits_; }

 private:
  codec_limits limits_;
  std::atomic<std::uint64_t> accepted_{0};
  std::array<std::atomic<std::uint64_t>, reject_reason_count> rejected_{};
};

}  // namespace baton::wire
