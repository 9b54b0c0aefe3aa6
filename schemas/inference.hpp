#pragma once

// Inference control messages (schemas/inference.capnp) in plain C++. Every message names
// the request and its attempt; a retry or migration is a new attempt.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "schemas/types.hpp"

namespace baton::wire {

/// Decoded values are finite, temperature >= 0 and 0 < top_p <= 1.
struct sampling {
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::uint64_t seed = 0;
  bool operator==(const sampling&) const = default;
};

/// Router -> decode: reserve KV; with a `writer` (a node), send the prefill job to its
/// prefill actor and grant it RMA writes into the blocks; without one, compute the prompt
/// on the decode node. `tokens` is the prompt followed by tokens already delivered;
/// decoded values have prompt_length <= tokens.size().
struct admit {
  request_id request{};
  std::uint32_t attempt = 0;
  std::vector<std::uint32_t> tokens;
  std::uint32_t prompt_length = 0;
  std::uint32_t max_tokens = 0;
  sampling params;
  std::string writer;
  bool operator==(const admit&) const = default;
};

/// Decode -> prefill: compute `tokens` and write their KV into `target`.
struct prefill {
  request_id request{};
  std::uint32_t attempt = 0;
  std::vector<std::uint32_t> tokens;
  std::uint32_t prompt_length = 0;
  sampling params;
  kv_descriptor target;
  actor_address decode;
  bool operator==(const prefill&) const = default;
};

/// Prefill -> decode, after every RMA write of the attempt completed.
struct prefill_done {
  request_id request{};
  std::uint32_t attempt = 0;
  std::uint32_t first_token = 0;
  std::uint32_t position = 0;
  std::vector<std::uint64_t> checksums;
  bool operator==(const prefill_done&) const = default;
};

/// Decode -> router: tokens at first_position, first_position + 1, ...; with `finish`, the
/// attempt ends after them for that reason (the last token and the end in one message).
struct token_batch {
  request_id request{};
  std::uint32_t attempt = 0;
  std::uint32_t first_position = 0;
  std::vector<std::uint32_t> tokens;
  std::optional<finish_reason> finish;
  bool operator==(const token_batch&) const = default;
};

struct finish {
  request_id request{};
  std::uint32_t attempt = 0;
  finish_reason reason = finish_reason::length;
  std::uint32_t generated_tokens = 0;
  bool operator==(const finish&) const = default;
};

/// Positions past an attempt's tokens a decode node may generate before its first window.
inline constexpr std::uint32_t initial_stream_window = 64;

/// Router -> decode: generate no token at a position >= limit (back-pressure).
struct stream_window {
  request_id request{};
  std::uint32_t attempt = 0;
  std::uint32_t limit = 0;
  bool operator==(const stream_window&) const = default;
};

struct cancel {
  request_id request{};
  std::string reason;
  bool operator==(const cancel&) const = default;
};

/// This attempt failed; a prefill sends it only after all its RMA writes ended.
struct abort_attempt {
  request_id request{};
  std::uint32_t attempt = 0;
  errc code = errc::failed;
  std::string message;
  bool operator==(const abort_attempt&) const = default;
};

}  // namespace baton::wire
