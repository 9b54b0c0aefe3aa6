#pragma once

// Inference control messages (schemas/inference.capnp) in plain C++. Every message names
// the request and its attempt; a retry or migration is a new attempt.

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "schemas/types.hpp"

namespace baton::wire {

/// A bias added to one token's logit.
struct logit_bias_entry {
  std::uint32_t token = 0;
  float bias = 0.0f;
  bool operator==(const logit_bias_entry&) const = default;
};

/// How a request's tokens are picked (engine::sampling_options says what each does; at
/// their defaults, exactly as llama2.c). Decoded values are finite and in range:
/// temperature >= 0, 0 < top_p <= 1, 0 <= min_p <= 1, penalties in [-2, 2],
/// 0 < repetition_penalty <= 10, biases in [-100, 100], top_logprobs <= 20.
struct sampling {
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::uint64_t seed = 0;
  std::uint32_t top_k = 0;
  float min_p = 0.0f;
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  float repetition_penalty = 1.0f;
  std::vector<logit_bias_entry> logit_bias{};
  std::uint32_t min_tokens = 0;    ///< the end of text is not sampled before this many tokens
  bool ignore_eos = false;         ///< the end-of-text token does not end the generation
  bool logprobs = false;           ///< report each token's log-probability...
  std::uint32_t top_logprobs = 0;  ///< ... and this many most likely alternatives
  bool operator==(const sampling&) const = default;
};

/// Limits of `sampling` and of a request's choices.
inline constexpr std::size_t max_logit_bias = 1024;
inline constexpr std::uint32_t max_top_logprobs = 20;
inline constexpr std::uint32_t max_choices = 16;

struct top_logprob {
  std::uint32_t token = 0;
  float logprob = 0.0f;
  bool operator==(const top_logprob&) const = default;
};

/// A sampled token's log-probability and the most likely alternatives, most likely first.
struct token_logprobs {
  std::uint32_t token = 0;
  float logprob = 0.0f;
  std::vector<top_logprob> top{};
  bool operator==(const token_logprobs&) const = default;
};

/// Router -> decode: reserve KV; with a `writer` (a node), send the prefill job to its
/// prefill actor and grant it RMA writes into the blocks; without one, compute the prompt
/// on the decode node. `tokens` is the prompt followed by tokens already delivered;
/// decoded values have prompt_length <= tokens.size(). The attempt serves the request's
/// choices `choice` .. `choice + choices - 1` (OpenAI's `n`); several only while nothing
/// was delivered (tokens.size() == prompt_length): they share the prompt's KV.
struct admit {
  request_id request{};
  std::uint32_t attempt = 0;
  std::vector<std::uint32_t> tokens;
  std::uint32_t prompt_length = 0;
  std::uint32_t max_tokens = 0;  ///< per choice
  sampling params;
  std::string writer;
  std::uint32_t choice = 0;
  std::uint32_t choices = 1;
  /// The writer's incarnation the router placed on (0: any): a decode node that knows
  /// only an older one (or none alive) waits for membership to tell it of this one.
  std::uint64_t writer_incarnation = 0;
  bool operator==(const admit&) const = default;
};

/// Decode -> prefill: compute `tokens`, write their KV into `target`, and pick the first
/// token of each of the admit's choices.
struct prefill {
  request_id request{};
  std::uint32_t attempt = 0;
  std::vector<std::uint32_t> tokens;
  std::uint32_t prompt_length = 0;
  sampling params;
  kv_descriptor target;
  actor_address decode;
  std::uint32_t choice = 0;
  std::uint32_t choices = 1;
  bool operator==(const prefill&) const = default;
};

/// Prefill -> decode, after every RMA write of the attempt completed: the first token of
/// each choice (at least one), with its log-probabilities when the sampling asks.
struct prefill_done {
  request_id request{};
  std::uint32_t attempt = 0;
  std::vector<std::uint32_t> first_tokens;
  std::uint32_t position = 0;
  std::vector<std::uint64_t> checksums;
  std::vector<token_logprobs> logprobs{};  ///< empty, or one per first token
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
  std::uint32_t choice = 0;
  std::vector<token_logprobs> logprobs{};  ///< empty, or one per token
  bool operator==(const token_batch&) const = default;
};

/// Decode -> router: choice `choice` of the attempt ended with no token to send.
struct finish {
  request_id request{};
  std::uint32_t attempt = 0;
  finish_reason reason = finish_reason::length;
  std::uint32_t generated_tokens = 0;
  std::uint32_t choice = 0;
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

/// Router -> prefill or decode: the request (or only `attempt` of it, when not 0) is over.
struct cancel {
  request_id request{};
  std::string reason;
  std::uint32_t attempt = 0;
  bool operator==(const cancel&) const = default;
};

/// A choice a resuming router still needs, and the position its client expects next.
struct claim_choice {
  std::uint32_t choice = 0;
  std::uint32_t position = 0;
  bool operator==(const claim_choice&) const = default;
};

/// Router -> decode, resuming `request` (the first router's id) as `new_request` after its
/// router died: a decode node holding that request's sequences for a router that is gone
/// hands them over: it renumbers each attempt attempt_base + i, sends each choice's tokens
/// from `position` on, and answers claimed. Decoded claims name each choice once.
struct claim {
  request_id request{};
  request_id new_request{};
  std::uint32_t attempt_base = 0;
  std::vector<claim_choice> choices;
  bool operator==(const claim&) const = default;
};

/// One attempt handed over: its new number, the choices it serves, its committed blocks.
struct claimed_attempt {
  std::uint32_t attempt = 0;
  std::vector<std::uint32_t> choices;
  std::uint32_t blocks = 0;
  bool operator==(const claimed_attempt&) const = default;
};

/// Decode -> the claiming router: what it took over of the claim (maybe nothing).
struct claimed {
  request_id request{};  ///< the claiming router's id
  std::vector<claimed_attempt> attempts;
  bool operator==(const claimed&) const = default;
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
