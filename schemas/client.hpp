#pragma once

// The native client protocol (schemas/client.capnp) in plain C++: what a router client
// and a router say to each other over a router's native port. Every request a client
// starts ends with exactly one `finished` or `rejected` carrying its client_tag.

#include <cstdint>
#include <optional>
#include <string>
#include <variant>
#include <vector>

#include "base/error.hpp"
#include "schemas/inference.hpp"
#include "schemas/types.hpp"

namespace baton::wire {

/// The native client protocol's version: it changes only with a change old clients or
/// routers cannot read (docs/wire-format.md, "Compatibility"); within it, the schema
/// grows by Cap'n Proto's compatible rules.
inline constexpr std::uint16_t client_protocol_version = 1;

/// What a client has of one choice of a request it resumes.
struct resume_choice {
  std::vector<std::uint32_t> tokens;  ///< every token received, in position order
  bool done = false;                  ///< the choice ended (its chunk said so)
  finish_reason reason = finish_reason::length;
  bool operator==(const resume_choice&) const = default;
};

/// A request resumed on another router after its router went away: the first router's
/// request id and, per choice, what the client received. Decoded values have exactly n
/// choices.
struct resume_state {
  request_id request{};
  std::vector<resume_choice> choices;
  bool operator==(const resume_state&) const = default;
};

/// Client -> router: generate text for `prompt`.
struct generate_request {
  std::uint64_t client_tag = 0;  ///< chosen by the client, unique among its open requests
  std::string prompt;
  std::uint32_t max_tokens = 0;     ///< 0 = up to the position limit
  std::uint32_t max_positions = 0;  ///< positions incl. the prompt (llama2.c -n); 0 = seq_len
  sampling params;                  ///< params.seed is used only when has_seed
  bool has_seed = false;            ///< false: the router picks a seed (reported in accepted)
  std::uint32_t timeout_ms = 0;     ///< 0 = the server's default
  /// Choices (OpenAI's `n`, 1..max_choices): choice i samples with
  /// engine::choice_seed(seed, i); choice 0 is what a request of one choice gives.
  std::uint32_t n = 1;
  /// Set: continue this request where the client's stream stopped (with the seed the first
  /// router assigned, has_seed true, and every other field as first sent).
  std::optional<resume_state> resume{};
  /// The caller's API key, where the router asks for one ([router] api_keys); sent only
  /// over TLS or to loopback.
  std::string api_key{};
  bool operator==(const generate_request&) const = default;
};

/// Client -> router: stop the request; the router answers finished{cancelled}.
struct cancel_request {
  std::uint64_t client_tag = 0;
  bool operator==(const cancel_request&) const = default;
};

/// Router -> client: the request was admitted and placed.
struct accepted {
  std::uint64_t client_tag = 0;
  request_id request{};
  std::uint64_t seed = 0;  ///< the seed in use, assigned when the request had none
  std::uint32_t prompt_tokens = 0;
  std::string prompt_text;  ///< the prompt pieces llama2.c echoes
  std::string prefill_node;
  std::string decode_node;
  std::string placement;  ///< "disaggregated", "prefill-on-decode", ...
  bool operator==(const accepted&) const = default;
};

struct client_top_logprob {
  std::uint32_t token = 0;
  float logprob = 0.0f;
  std::string text;  ///< the token's bytes (maybe a piece of a UTF-8 character)
  bool operator==(const client_top_logprob&) const = default;
};

/// A token's log-probability, its bytes, and the most likely alternatives.
struct client_logprobs {
  std::uint32_t token = 0;
  float logprob = 0.0f;
  std::string text;
  std::vector<client_top_logprob> top{};
  bool operator==(const client_logprobs&) const = default;
};

/// Router -> client: tokens of choice `choice` at first_position, first_position + 1, ...
/// and their text. With `finish`, that choice ended after them (the chunk may then hold
/// no token): only requests of several choices say so; one of a single choice ends with
/// `finished`. Decoded chunks hold a token or a finish, first_position + count < 2^32,
/// and no logprobs or one per token.
struct token_chunk {
  std::uint64_t client_tag = 0;
  std::uint32_t first_position = 0;
  std::vector<std::uint32_t> tokens;
  std::string text;
  std::uint32_t choice = 0;
  std::vector<client_logprobs> logprobs{};
  std::optional<finish_reason> finish{};
  bool operator==(const token_chunk&) const = default;
};

/// Router -> client: the request ended normally or was cancelled.
struct finished {
  std::uint64_t client_tag = 0;
  finish_reason reason = finish_reason::length;
  std::uint32_t prompt_tokens = 0;
  std::uint32_t completion_tokens = 0;
  /// Microseconds during which some message of the request was inside the router process
  /// (from the router taking it off its socket or transport to handing what it caused to
  /// its socket writer or transport; the union over the request's messages,
  /// docs/serving.md).
  std::uint32_t router_us = 0;
  bool operator==(const finished&) const = default;
};

/// Router -> client: the request failed, before or after `accepted`. client_tag 0 with
/// no request of that tag means the connection itself failed and will be closed.
struct rejected {
  std::uint64_t client_tag = 0;
  errc code = errc::failed;
  std::string message;
  bool operator==(const rejected&) const = default;
};

using client_message =
    std::variant<generate_request, cancel_request, accepted, token_chunk, finished, rejected>;

/// The wire name of the message's type ("tokens"), for logs and error messages.
[[nodiscard]] const char* client_message_name(const client_message& m) noexcept;

}  // namespace baton::wire
