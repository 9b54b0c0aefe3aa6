// Fuzz target for the OpenAI request parser (frontend/openai_request.hpp): any body, for
// either endpoint, must give a request or a 4xx error in OpenAI's shape, never a crash or
// an exception (an exception escaping here aborts the fuzzer).
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string_view>

#include "frontend/openai_request.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view body(reinterpret_cast<const char*>(data), size);
  const baton::frontend::request_limits limits{"stories260K", 4096, 256u << 10};
  for (auto kind : {baton::frontend::api_kind::completions, baton::frontend::api_kind::chat}) {
    auto r = baton::frontend::parse_openai_request(kind, body, limits);
    if (r) {
      if (r->request.prompt.size() > limits.max_prompt_bytes) std::abort();
      if (r->request.max_tokens > limits.max_tokens_limit) std::abort();
      if (r->stops.size() > 4) std::abort();
    } else if (r.error().status < 400 || r.error().status > 499 || r.error().message.empty()) {
      std::abort();
    }
  }
  return 0;
}
