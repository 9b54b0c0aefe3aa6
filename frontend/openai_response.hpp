#pragma once

// OpenAI's answer bodies (docs/http-api.md): a whole completion, the chunks of a streamed
// one, errors, and the text filter that keeps UTF-8 characters whole and stop strings
// out. Pure functions and a value type: no sockets, no threads.

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "frontend/openai_request.hpp"
#include "schemas/client.hpp"

namespace baton::frontend {

/// `{"error": {...}}` and a newline.
[[nodiscard]] std::string error_body(const api_error& e);

/// What a router's rejection becomes (docs/http-api.md, "Errors").
[[nodiscard]] api_error from_rejection(errc code, std::string message);

/// What every chunk or answer of one request repeats.
struct completion_context {
  api_kind kind = api_kind::completions;
  std::string id;  ///< "cmpl-7", "chatcmpl-7"
  std::int64_t created = 0;
  std::string model;
  bool include_usage = false;
  bool logprobs = false;    ///< chunks and answers carry log-probabilities
  wire::accepted accepted;  ///< where the request runs: the "baton" extension
};

/// One choice of a whole (not streamed) answer.
struct choice_answer {
  std::string text;
  std::string reason;  ///< "stop", "length"
  std::vector<wire::client_logprobs> logprobs;
};

struct token_usage {
  std::uint32_t prompt_tokens = 0;
  std::uint32_t completion_tokens = 0;
};

/// The first streamed chunk of choice `index`: the role (chat) or the echoed prompt
/// (completions with `echo`; else empty text); the first of them carries the "baton"
/// extension.
[[nodiscard]] std::string first_chunk(const completion_context& c, std::uint32_t index, bool echo);
/// A chunk of choice `index` carrying `text` and, when the request asked, the
/// log-probabilities of the tokens that came with it (`offset`: where the first of them
/// starts in the choice's text, completions' text_offset).
[[nodiscard]] std::string text_chunk(const completion_context& c, std::uint32_t index,
                                     std::string_view text,
                                     std::span<const wire::client_logprobs> logprobs = {},
                                     std::size_t offset = 0);
/// The chunk that carries choice `index`'s finish reason.
[[nodiscard]] std::string final_chunk(const completion_context& c, std::uint32_t index,
                                      std::string_view reason);
/// With stream_options.include_usage: the last chunk, with no choices and the usage.
[[nodiscard]] std::string usage_chunk(const completion_context& c, token_usage u);
/// A whole (not streamed) answer.
[[nodiscard]] std::string whole_answer(const completion_context& c,
                                       std::span<const choice_answer> choices, token_usage u);

/// GET /v1/models/MODEL (`list`: GET /v1/models, a list of that one model).
[[nodiscard]] std::string model_body(std::string_view model, bool list);

/// The longest prefix of `bytes` that ends on a UTF-8 character boundary: what may be sent
/// now, the rest waiting for the bytes that complete its character.
[[nodiscard]] std::size_t complete_utf8_prefix(std::string_view bytes) noexcept;

/// Streamed text: whole UTF-8 characters only, and never a piece of a stop string.
class text_filter {
 public:
  explicit text_filter(std::vector<std::string> stops) : stops_(std::move(stops)) {}

  /// Takes the next bytes; returns what may be sent now. `stopped` turns true when a stop
  /// string appeared: the text before it is returned and the rest is dropped. While
  /// `may_stop` is false (before min_tokens), stop strings are text like any other.
  [[nodiscard]] std::string feed(std::string_view bytes, bool& stopped, bool may_stop = true);
  /// At the end of the text: whatever was held back.
  [[nodiscard]] std::string flush();

 private:
  std::vector<std::string> stops_;
  std::string pending_;  // the start of an incomplete UTF-8 character
  std::string held_;     // whole characters that may begin a stop string
};

}  // namespace baton::frontend
