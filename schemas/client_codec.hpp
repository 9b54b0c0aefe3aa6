#pragma once

// The codec of the native client protocol (schemas/client.hpp, docs/wire-format.md).
// On a byte stream each message is a frame: a 4-byte little-endian length, then one
// Cap'n Proto message in the flat serialization. Decoding checks the whole message under
// Cap'n Proto's limits, every discriminant, enum and length, and never throws; encoding
// applies the same checks, so a frame one side sends is one the other side accepts.

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "schemas/client.hpp"

namespace baton::wire {

/// Bounds every client frame must respect.
struct client_limits {
  std::size_t max_message_bytes = 1u << 20;     ///< the message after the length prefix
  std::uint32_t max_prompt_bytes = 256u << 10;  ///< prompt and prompt_text
  std::uint32_t max_chunk_tokens = 4096;        ///< tokens in one token_chunk
  std::uint32_t max_text_bytes = 64u << 10;     ///< chunk text and rejection messages
  std::uint32_t max_name_bytes = 128;           ///< node names and the placement
  int nesting_limit = 8;
};

/// Bytes of the little-endian length that precedes each message on a stream.
inline constexpr std::size_t client_length_bytes = 4;

/// Encodes `m` as a whole frame (length prefix included). Fails with invalid_argument if
/// `m` breaks `limits`.
[[nodiscard]] expected<std::vector<std::byte>> encode_client_frame(
    const client_message& m, const client_limits& limits = {});

/// The message length a frame's prefix announces. Fails with invalid_argument unless it
/// is a positive multiple of 8 of at most max_message_bytes.
[[nodiscard]] expected<std::size_t> client_frame_length(
    std::span<const std::byte, client_length_bytes> prefix, const client_limits& limits = {});

/// Decodes one message: the bytes after the length prefix, exactly, at any alignment.
/// `bytes` is not referenced after the call returns. Fails with invalid_argument and a
/// message naming the field for anything malformed.
[[nodiscard]] expected<client_message> decode_client_message(std::span<const std::byte> bytes,
                                                             const client_limits& limits = {});

}  // namespace baton::wire
