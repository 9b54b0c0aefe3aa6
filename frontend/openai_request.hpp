#pragma once

// An OpenAI completions or chat-completions request body, parsed: a pure function from
// bytes to a typed request or a typed error in OpenAI's shape (docs/http-api.md). No
// sockets, no threads; it never throws, whatever the bytes (tests/fuzz/openai_request_fuzz).

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <tl/expected.hpp>

#include "schemas/client.hpp"

namespace baton::frontend {

enum class api_kind : std::uint8_t { completions, chat };

/// An error answer: HTTP status and OpenAI's {"error": {message, type, param, code}}.
struct api_error {
  unsigned status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  ///< the field at fault; empty: null
  std::string code;   ///< empty: null
};

/// A 400 invalid_request_error.
[[nodiscard]] api_error bad_request(std::string message, std::string param = {},
                                    std::string code = {});

/// What the server accepts; a request past a limit is a 400 that names it.
struct request_limits {
  std::string model = "baton";                ///< the one model id served; another: 404
  std::uint32_t max_tokens_limit = 4096;      ///< larger max_tokens
  std::size_t max_prompt_bytes = 256u << 10;  ///< longer prompts (after the chat template)
};

/// A request, checked and ready for the router.
struct openai_request {
  api_kind kind = api_kind::completions;
  bool stream = false;
  bool include_usage = false;      ///< stream_options.include_usage
  bool echo = false;               ///< completions: the prompt's text before the answer
  std::vector<std::string> stops;  ///< at most 4, each 1 to 256 bytes
  /// prompt (chat: after the template), max_tokens, n and the sampling (temperature,
  /// top_p, seed, penalties, logit_bias, top_k, min_p, min_tokens, ignore_eos, logprobs);
  /// the server sets client_tag and timeout_ms.
  wire::generate_request request;
};

/// Parses a request body for `kind`. Every parameter of OpenAI's completions and chat
/// completions references is recognized (docs/http-api.md has the table): implemented,
/// accepted and ignored (saying why in the docs), or refused with a 400 that says why (what
/// a base model cannot do: tools, JSON output, images, audio). Every field's JSON type and
/// range is checked; an unknown parameter, a wrong type or a value out of range is a 400
/// whose `param` names the field and whose message says what was expected; an unknown
/// model is a 404.
[[nodiscard]] tl::expected<openai_request, api_error> parse_openai_request(
    api_kind kind, std::string_view body, const request_limits& limits);

/// The prompt a chat request becomes on a base model (docs/http-api.md): one line
/// "System: ...", "User: ..." or "Assistant: ..." per message, then "Assistant:".
[[nodiscard]] std::string chat_prompt(
    const std::vector<std::pair<std::string, std::string>>& role_and_content);

}  // namespace baton::frontend
