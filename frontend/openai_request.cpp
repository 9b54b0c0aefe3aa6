#include "frontend/openai_request.hpp"

#include <algorithm>
#include <array>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace baton::frontend {
namespace {

using json = nlohmann::json;
template <class T>
using parsed = tl::expected<T, api_error>;

constexpr std::size_t max_stop_strings = 4;
constexpr std::size_t max_stop_bytes = 256;

/// Parameters both endpoints take; then each endpoint's own.
constexpr std::array<std::string_view, 9> common_parameters = {
    "model",  "max_tokens",     "temperature", "top_p", "seed",
    "stream", "stream_options", "stop",        "user"};
constexpr std::array<std::string_view, 2> completions_parameters = {"prompt", "echo"};
constexpr std::array<std::string_view, 1> chat_parameters = {"messages"};

template <std::size_t N>
bool listed(const std::array<std::string_view, N>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

tl::unexpected<api_error> wrong_type(std::string_view name, std::string_view expected) {
  return tl::unexpected(bad_request(fmt::format("'{}' must be {}", name, expected),
                                    std::string(name), "invalid_type"));
}

tl::unexpected<api_error> invalid(std::string message, std::string_view param) {
  return tl::unexpected(bad_request(std::move(message), std::string(param)));
}

/// `j[name]` of an object, or null when absent or JSON null (OpenAI treats both as "not
/// given"). Only ever called on objects.
const json* field(const json& object, std::string_view name) {
  const auto it = object.find(name);
  return it == object.end() || it->is_null() ? nullptr : &*it;
}

/// A string field of an object, or nullopt when absent; a wrong type is an error naming
/// `param`.
parsed<const std::string*> string_field(const json& object, std::string_view name,
                                        std::string_view param) {
  const json* v = field(object, name);
  if (v == nullptr) return nullptr;
  if (!v->is_string()) return wrong_type(param, "a string");
  return v->get_ptr<const std::string*>();
}

/// A boolean field, false when absent; `param` names it in errors (default: `name`).
parsed<bool> boolean(const json& object, std::string_view name, std::string_view param = {}) {
  const json* v = field(object, name);
  if (v == nullptr) return false;
  if (!v->is_boolean()) return wrong_type(param.empty() ? name : param, "a boolean");
  return v->get<bool>();
}

/// A number in [low, high] (`open_low`: excluding low), or `fallback` when absent.
parsed<float> number(const json& object, std::string_view name, double low, double high,
                     bool open_low, float fallback) {
  const json* v = field(object, name);
  if (v == nullptr) return fallback;
  if (!v->is_number()) return wrong_type(name, "a number");
  const double d = v->get<double>();
  if (d < low || (open_low && d == low) || d > high) {
    return tl::unexpected(bad_request(fmt::format("'{}' is {}; expected a number in {}{}, {}]",
                                                  name, d, open_low ? "(" : "[", low, high),
                                      std::string(name), "invalid_value"));
  }
  return static_cast<float>(d);
}

/// A chat message's content (`where`: "messages[2].content"): a string, or an array of
/// {"type": "text", "text": ...} parts.
parsed<std::string> message_content(const json& content, const std::string& where) {
  if (content.is_string()) return content.get<std::string>();
  if (!content.is_array()) return wrong_type(where, "a string or an array of text parts");
  std::string out;
  for (std::size_t i = 0; i < content.size(); ++i) {
    const json& part = content[i];
    const auto at = fmt::format("{}[{}]", where, i);
    if (!part.is_object()) return wrong_type(at, "an object {\"type\": \"text\", \"text\": ...}");
    const json* type = field(part, "type");
    if (type == nullptr || !type->is_string()) return wrong_type(at + ".type", "a string");
    if (type->get_ref<const std::string&>() != "text") {
      return invalid(fmt::format("{}.type is \"{}\": only text content parts are supported "
                                 "(this is a base model: no images or audio)",
                                 at, type->get_ref<const std::string&>()),
                     at + ".type");
    }
    const json* text = field(part, "text");
    if (text == nullptr || !text->is_string()) return wrong_type(at + ".text", "a string");
    out += text->get_ref<const std::string&>();
  }
  return out;
}

parsed<std::string> chat_prompt_of(const json& messages) {
  if (!messages.is_array() || messages.empty()) {
    return wrong_type("messages", "a non-empty array of messages");
  }
  std::vector<std::pair<std::string, std::string>> turns;
  for (std::size_t i = 0; i < messages.size(); ++i) {
    const json& m = messages[i];
    const auto at = fmt::format("messages[{}]", i);
    if (!m.is_object()) return wrong_type(at, "an object with a role and content");
    const json* role = field(m, "role");
    if (role == nullptr || !role->is_string()) {
      return invalid("every message needs a string 'role'", at + ".role");
    }
    const auto& r = role->get_ref<const std::string&>();
    if (r != "system" && r != "developer" && r != "user" && r != "assistant") {
      return invalid(fmt::format("message role '{}': expected system, user or assistant", r),
                     at + ".role");
    }
    std::string content;
    if (const json* c = field(m, "content")) {
      auto text = message_content(*c, at + ".content");
      if (!text) return tl::unexpected(text.error());
      content = std::move(*text);
    }
    turns.emplace_back(r == "developer" ? "system" : r, std::move(content));
  }
  return chat_prompt(turns);
}

parsed<std::vector<std::string>> stop_strings(const json& j) {
  std::vector<std::string> out;
  const json* v = field(j, "stop");
  if (v == nullptr) return out;
  if (v->is_string()) {
    out.push_back(v->get<std::string>());
  } else if (v->is_array() && v->size() <= max_stop_strings) {
    for (const auto& s : *v) {
      if (!s.is_string()) return wrong_type("stop", "a string or an array of strings");
      out.push_back(s.get<std::string>());
    }
  } else {
    return wrong_type("stop", "a string or an array of at most 4 strings");
  }
  for (const auto& s : out) {
    if (s.empty() || s.size() > max_stop_bytes) {
      return invalid(fmt::format("stop strings must have 1 to {} bytes", max_stop_bytes), "stop");
    }
  }
  return out;
}

/// The prompt: completions' `prompt` (a string or an array of one string), or the chat
/// template over `messages`; at most limits.max_prompt_bytes.
parsed<void> read_prompt(const json& j, const request_limits& limits, openai_request& r) {
  if (r.kind == api_kind::completions) {
    const json* prompt = field(j, "prompt");
    if (prompt != nullptr && prompt->is_array() && prompt->size() == 1) prompt = &(*prompt)[0];
    if (prompt == nullptr || !prompt->is_string()) {
      return wrong_type("prompt", "a string (or an array of one string)");
    }
    r.request.prompt = prompt->get<std::string>();
    auto echo = boolean(j, "echo");
    if (!echo) return tl::unexpected(echo.error());
    r.echo = *echo;
  } else {
    const json* messages = field(j, "messages");
    if (messages == nullptr) return wrong_type("messages", "an array of messages");
    auto prompt = chat_prompt_of(*messages);
    if (!prompt) return tl::unexpected(prompt.error());
    r.request.prompt = std::move(*prompt);
  }
  if (r.request.prompt.size() > limits.max_prompt_bytes) {
    return tl::unexpected(bad_request(fmt::format("the prompt has {} bytes; the limit is {}",
                                                  r.request.prompt.size(), limits.max_prompt_bytes),
                                      r.kind == api_kind::chat ? "messages" : "prompt",
                                      "context_length_exceeded"));
  }
  return {};
}

/// max_tokens, temperature, top_p and seed.
parsed<void> read_sampling(const json& j, const request_limits& limits, openai_request& r) {
  if (const json* v = field(j, "max_tokens")) {
    if (!v->is_number_integer()) return wrong_type("max_tokens", "an integer");
    if (v->is_number_unsigned() ? v->get<std::uint64_t>() > limits.max_tokens_limit
                                : v->get<std::int64_t>() < 0) {
      return tl::unexpected(
          bad_request(fmt::format("max_tokens is {}; expected an integer in [0, {}]", v->dump(),
                                  limits.max_tokens_limit),
                      "max_tokens", "invalid_value"));
    }
    r.request.max_tokens = static_cast<std::uint32_t>(v->get<std::uint64_t>());
  }
  auto temperature = number(j, "temperature", 0, 2, false, 1.0f);
  if (!temperature) return tl::unexpected(temperature.error());
  auto top_p = number(j, "top_p", 0, 1, true, 1.0f);
  if (!top_p) return tl::unexpected(top_p.error());
  r.request.params.temperature = *temperature;
  r.request.params.top_p = *top_p;
  if (const json* v = field(j, "seed")) {
    if (!v->is_number_integer()) return wrong_type("seed", "an integer");
    if (!v->is_number_unsigned()) {
      return tl::unexpected(bad_request("seed must not be negative", "seed", "invalid_value"));
    }
    r.request.params.seed = v->get<std::uint64_t>();
    r.request.has_seed = true;
  }
  return {};
}

/// stream, stream_options, user and stop.
parsed<void> read_streaming(const json& j, openai_request& r) {
  auto stream = boolean(j, "stream");
  if (!stream) return tl::unexpected(stream.error());
  r.stream = *stream;
  if (const json* v = field(j, "stream_options")) {
    if (!v->is_object()) return wrong_type("stream_options", "an object");
    for (const auto& [key, value] : v->items()) {
      if (key != "include_usage") {
        return tl::unexpected(bad_request(
            fmt::format("Unrecognized request argument supplied: stream_options.{}", key),
            "stream_options", "unknown_parameter"));
      }
    }
    auto usage = boolean(*v, "include_usage", "stream_options.include_usage");
    if (!usage) return tl::unexpected(usage.error());
    r.include_usage = *usage;
  }
  if (auto user = string_field(j, "user", "user"); !user) return tl::unexpected(user.error());
  auto stops = stop_strings(j);
  if (!stops) return tl::unexpected(stops.error());
  r.stops = std::move(*stops);
  return {};
}

}  // namespace

api_error bad_request(std::string message, std::string param, std::string code) {
  return {400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

tl::expected<openai_request, api_error> parse_openai_request(api_kind kind, std::string_view body,
                                                             const request_limits& limits) {
  const json j = json::parse(body, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded()) return tl::unexpected(bad_request("the body is not valid JSON"));
  if (!j.is_object()) return tl::unexpected(bad_request("the body must be a JSON object"));
  for (const auto& [key, value] : j.items()) {
    const bool known = listed(common_parameters, key) ||
                       (kind == api_kind::completions && listed(completions_parameters, key)) ||
                       (kind == api_kind::chat && listed(chat_parameters, key));
    if (!known) {
      return tl::unexpected(
          bad_request(fmt::format("Unrecognized request argument supplied: {}", key), key,
                      "unknown_parameter"));
    }
  }
  openai_request r;
  r.kind = kind;
  auto model = string_field(j, "model", "model");
  if (!model) return tl::unexpected(model.error());
  if (*model == nullptr) {
    return tl::unexpected(bad_request("you must provide a model parameter", "model"));
  }
  if (**model != limits.model) {
    return tl::unexpected(
        api_error{404,
                  fmt::format("The model '{}' does not exist; this server serves '{}'", **model,
                              limits.model),
                  "invalid_request_error", "model", "model_not_found"});
  }
  for (auto step : {read_prompt, read_sampling}) {
    if (auto ok = step(j, limits, r); !ok) return tl::unexpected(ok.error());
  }
  if (auto ok = read_streaming(j, r); !ok) return tl::unexpected(ok.error());
  return r;
}

std::string chat_prompt(const std::vector<std::pair<std::string, std::string>>& role_and_content) {
  std::string out;
  for (const auto& [role, content] : role_and_content) {
    const char* name = role == "system" ? "System" : role == "assistant" ? "Assistant" : "User";
    out += fmt::format("{}: {}\n", name, content);
  }
  out += "Assistant:";
  return out;
}

}  // namespace baton::frontend
