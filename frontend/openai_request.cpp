#include "frontend/openai_request.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <initializer_list>
#include <optional>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace baton::frontend {
namespace {

using json = nlohmann::json;
template <class T>
using parsed = tl::expected<T, api_error>;

constexpr std::size_t max_stop_strings = 4;
constexpr std::size_t max_stop_bytes = 256;

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

/// An integer parameter in [low, high], or nullopt when absent.
parsed<std::optional<std::int64_t>> integer(const json& j, std::string_view name, std::int64_t low,
                                            std::int64_t high) {
  const json* v = field(j, name);
  if (v == nullptr) return std::optional<std::int64_t>{};
  if (!v->is_number_integer()) return wrong_type(name, "an integer");
  const bool in_range = v->is_number_unsigned()
                            ? v->get<std::uint64_t>() <= static_cast<std::uint64_t>(high)
                            : v->get<std::int64_t>() >= low && v->get<std::int64_t>() <= high;
  if (!in_range || (v->is_number_unsigned() && low > 0 && v->get<std::uint64_t>() < 1)) {
    return tl::unexpected(bad_request(
        fmt::format("'{}' is {}; expected an integer in [{}, {}]", name, v->dump(), low, high),
        std::string(name), "invalid_value"));
  }
  return std::optional<std::int64_t>{v->is_number_unsigned()
                                         ? static_cast<std::int64_t>(v->get<std::uint64_t>())
                                         : v->get<std::int64_t>()};
}

/// max_tokens (chat: or max_completion_tokens), n, temperature, top_p and seed.
parsed<void> read_sampling(const json& j, const request_limits& limits, openai_request& r) {
  auto max_tokens = integer(j, "max_tokens", 0, limits.max_tokens_limit);
  if (!max_tokens) return tl::unexpected(max_tokens.error());
  if (r.kind == api_kind::chat) {
    auto completion = integer(j, "max_completion_tokens", 0, limits.max_tokens_limit);
    if (!completion) return tl::unexpected(completion.error());
    if (*completion && *max_tokens && **completion != **max_tokens) {
      return invalid("max_tokens and max_completion_tokens differ; give one",
                     "max_completion_tokens");
    }
    if (*completion) *max_tokens = *completion;
  }
  if (*max_tokens) r.request.max_tokens = static_cast<std::uint32_t>(**max_tokens);
  auto n = integer(j, "n", 1, wire::max_choices);
  if (!n) return tl::unexpected(n.error());
  if (*n) r.request.n = static_cast<std::uint32_t>(**n);
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

/// OpenAI's penalties and logit_bias, and vLLM's top_k, min_p, repetition_penalty,
/// min_tokens and ignore_eos.
parsed<void> read_adjustments(const json& j, const request_limits&, openai_request& r) {
  auto& p = r.request.params;
  for (const auto& [name, target] : {std::pair{"frequency_penalty", &p.frequency_penalty},
                                     std::pair{"presence_penalty", &p.presence_penalty}}) {
    auto v = number(j, name, -2, 2, false, 0.0f);
    if (!v) return tl::unexpected(v.error());
    *target = *v;
  }
  auto repetition = number(j, "repetition_penalty", 0, 10, true, 1.0f);
  if (!repetition) return tl::unexpected(repetition.error());
  p.repetition_penalty = *repetition;
  auto min_p = number(j, "min_p", 0, 1, false, 0.0f);
  if (!min_p) return tl::unexpected(min_p.error());
  p.min_p = *min_p;
  // vLLM's top_k: -1 (or 0) means every token.
  auto top_k = integer(j, "top_k", -1, 1 << 20);
  if (!top_k) return tl::unexpected(top_k.error());
  if (*top_k && **top_k > 0) p.top_k = static_cast<std::uint32_t>(**top_k);
  auto min_tokens = integer(j, "min_tokens", 0, 1 << 20);
  if (!min_tokens) return tl::unexpected(min_tokens.error());
  if (*min_tokens) p.min_tokens = static_cast<std::uint32_t>(**min_tokens);
  if (r.request.max_tokens > 0 && p.min_tokens > r.request.max_tokens) {
    return invalid(
        fmt::format("min_tokens {} is more than max_tokens {}", p.min_tokens, r.request.max_tokens),
        "min_tokens");
  }
  auto ignore_eos = boolean(j, "ignore_eos");
  if (!ignore_eos) return tl::unexpected(ignore_eos.error());
  p.ignore_eos = *ignore_eos;
  if (const json* v = field(j, "logit_bias")) {
    if (!v->is_object()) return wrong_type("logit_bias", "an object of token ids to biases");
    if (v->size() > wire::max_logit_bias) {
      return invalid(fmt::format("logit_bias has {} entries; the limit is {}", v->size(),
                                 wire::max_logit_bias),
                     "logit_bias");
    }
    for (const auto& [key, bias] : v->items()) {
      std::uint32_t token = 0;
      const auto [end, ec] = std::from_chars(key.data(), key.data() + key.size(), token);
      if (key.empty() || ec != std::errc{} || end != key.data() + key.size()) {
        return invalid(fmt::format("logit_bias key '{}' is not a token id", key), "logit_bias");
      }
      if (!bias.is_number() || bias.get<double>() < -100 || bias.get<double>() > 100) {
        return invalid(fmt::format("logit_bias of token {} must be a number in [-100, 100]", key),
                       "logit_bias");
      }
      p.logit_bias.push_back({token, static_cast<float>(bias.get<double>())});
    }
  }
  return {};
}

/// Completions' `logprobs` (an integer 0..5: alternatives) or chat's `logprobs` (a
/// boolean) and `top_logprobs` (0..20).
parsed<void> read_logprobs(const json& j, const request_limits&, openai_request& r) {
  auto& p = r.request.params;
  if (r.kind == api_kind::completions) {
    auto k = integer(j, "logprobs", 0, 5);
    if (!k) return tl::unexpected(k.error());
    if (*k) {
      p.logprobs = true;
      p.top_logprobs = static_cast<std::uint32_t>(**k);
    }
    if (p.logprobs && r.echo) {
      return invalid("logprobs with echo: the prompt's log-probabilities are not computed",
                     "logprobs");
    }
    return {};
  }
  auto on = boolean(j, "logprobs");
  if (!on) return tl::unexpected(on.error());
  auto top = integer(j, "top_logprobs", 0, wire::max_top_logprobs);
  if (!top) return tl::unexpected(top.error());
  if (*top && !*on) return invalid("top_logprobs needs logprobs: true", "top_logprobs");
  p.logprobs = *on;
  if (*top) p.top_logprobs = static_cast<std::uint32_t>(**top);
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
      if (key != "include_usage" && key != "include_obfuscation") {
        return tl::unexpected(bad_request(
            fmt::format("Unrecognized request argument supplied: stream_options.{}", key),
            "stream_options", "unknown_parameter"));
      }
    }
    auto usage = boolean(*v, "include_usage", "stream_options.include_usage");
    if (!usage) return tl::unexpected(usage.error());
    r.include_usage = *usage;
    // Obfuscation pads chunks against length side channels on OpenAI's network: accepted
    // and ignored (docs/http-api.md).
    auto padding = boolean(*v, "include_obfuscation", "stream_options.include_obfuscation");
    if (!padding) return tl::unexpected(padding.error());
  }
  auto stops = stop_strings(j);
  if (!stops) return tl::unexpected(stops.error());
  r.stops = std::move(*stops);
  return {};
}

/// A parameter for what a base model cannot do: `allowed` says whether its value is the
/// harmless one (absent, empty, "none", "text"); otherwise a 400 that says why.
parsed<void> refuse_unless(const json& j, std::string_view name, bool allowed,
                           std::string_view why) {
  if (field(j, name) == nullptr || allowed) return {};
  return tl::unexpected(bad_request(fmt::format("'{}' is not supported: {}", name, why),
                                    std::string(name), "unsupported_parameter"));
}

bool empty_array(const json* v) {
  return v == nullptr || (v->is_array() && v->empty());
}
bool string_is(const json* v, std::initializer_list<std::string_view> values) {
  if (v == nullptr) return true;
  if (!v->is_string()) return false;
  const auto& text = v->get_ref<const std::string&>();
  return std::any_of(values.begin(), values.end(), [&](std::string_view x) { return x == text; });
}

/// What this base model cannot do, refused; and what it accepts but has no use for, type
/// checked (docs/http-api.md says why each is ignored).
parsed<void> read_capabilities(const json& j, const request_limits&, openai_request& r) {
  constexpr std::string_view base_model = "this server serves a base language model";
  if (r.kind == api_kind::completions) {
    const json* suffix = field(j, "suffix");
    if (auto ok = refuse_unless(j, "suffix", string_is(suffix, {""}),
                                "inserting text before a suffix needs a fill-in-the-middle model");
        !ok) {
      return ok;
    }
    auto best_of = integer(j, "best_of", 1, wire::max_choices);
    if (!best_of) return tl::unexpected(best_of.error());
    if (*best_of && **best_of != 1 && **best_of != r.request.n) {
      return invalid(
          "best_of other than n: ranking candidates by log-probability is not "
          "implemented; ask for n choices instead",
          "best_of");
    }
  } else {
    const json* tools = field(j, "tools");
    const json* functions = field(j, "functions");
    const auto tool_why =
        fmt::format("calling tools needs an instruction-tuned model; {}", base_model);
    for (auto [name, ok] :
         {std::pair{"tools", empty_array(tools)}, std::pair{"functions", empty_array(functions)},
          std::pair{"tool_choice", string_is(field(j, "tool_choice"), {"none", "auto"})},
          std::pair{"function_call", string_is(field(j, "function_call"), {"none", "auto"})}}) {
      if (auto refused = refuse_unless(j, name, ok, tool_why); !refused) return refused;
    }
    const json* format = field(j, "response_format");
    const bool text_format =
        format == nullptr || (format->is_object() && string_is(field(*format, "type"), {"text"}) &&
                              field(*format, "type") != nullptr);
    if (auto ok = refuse_unless(j, "response_format", text_format,
                                "only {\"type\": \"text\"}: JSON output needs constrained "
                                "decoding, which is not implemented");
        !ok) {
      return ok;
    }
    const json* modalities = field(j, "modalities");
    const bool text_only =
        modalities == nullptr ||
        (modalities->is_array() && std::all_of(modalities->begin(), modalities->end(),
                                               [](const json& m) { return m == "text"; }));
    if (auto ok = refuse_unless(j, "modalities", text_only, "this model makes text only"); !ok) {
      return ok;
    }
    for (auto [name, why] : {std::pair{"audio", "this model makes text only"},
                             std::pair{"prediction", "predicted outputs are not implemented"},
                             std::pair{"reasoning_effort", "this is not a reasoning model"},
                             std::pair{"web_search_options", "this server has no web search"}}) {
      if (auto ok = refuse_unless(j, name, false, why); !ok) return ok;
    }
    for (const char* name : {"parallel_tool_calls", "store"}) {
      if (auto ok = boolean(j, name); !ok) return tl::unexpected(ok.error());
    }
    if (const json* v = field(j, "metadata"); v != nullptr && !v->is_object()) {
      return wrong_type("metadata", "an object of strings");
    }
    if (auto ok = string_field(j, "verbosity", "verbosity"); !ok) return tl::unexpected(ok.error());
  }
  for (const char* name : {"user", "service_tier", "prompt_cache_key", "safety_identifier"}) {
    if (auto ok = string_field(j, name, name); !ok) return tl::unexpected(ok.error());
  }
  return {};
}

/// Where each parameter applies: both endpoints, or one of them.
enum class scope : std::uint8_t { both, completions, chat };

/// Every parameter of OpenAI's completions and chat completions references and the vLLM
/// extensions people use; anything else is an unknown parameter.
constexpr std::pair<std::string_view, scope> parameters[] = {
    {"model", scope::both},
    {"max_tokens", scope::both},
    {"temperature", scope::both},
    {"top_p", scope::both},
    {"n", scope::both},
    {"seed", scope::both},
    {"stream", scope::both},
    {"stream_options", scope::both},
    {"stop", scope::both},
    {"user", scope::both},
    {"frequency_penalty", scope::both},
    {"presence_penalty", scope::both},
    {"logit_bias", scope::both},
    {"logprobs", scope::both},
    {"service_tier", scope::both},
    {"prompt_cache_key", scope::both},
    {"safety_identifier", scope::both},
    {"top_k", scope::both},
    {"min_p", scope::both},
    {"repetition_penalty", scope::both},
    {"ignore_eos", scope::both},
    {"min_tokens", scope::both},
    {"prompt", scope::completions},
    {"echo", scope::completions},
    {"suffix", scope::completions},
    {"best_of", scope::completions},
    {"messages", scope::chat},
    {"max_completion_tokens", scope::chat},
    {"top_logprobs", scope::chat},
    {"response_format", scope::chat},
    {"tools", scope::chat},
    {"tool_choice", scope::chat},
    {"parallel_tool_calls", scope::chat},
    {"functions", scope::chat},
    {"function_call", scope::chat},
    {"modalities", scope::chat},
    {"audio", scope::chat},
    {"prediction", scope::chat},
    {"reasoning_effort", scope::chat},
    {"web_search_options", scope::chat},
    {"store", scope::chat},
    {"metadata", scope::chat},
    {"verbosity", scope::chat},
};

bool known(api_kind kind, std::string_view name) {
  return std::any_of(std::begin(parameters), std::end(parameters), [&](const auto& p) {
    return p.first == name && (p.second == scope::both ||
                               (p.second == scope::completions) == (kind == api_kind::completions));
  });
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
    if (!known(kind, key)) {
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
  for (auto step :
       {read_prompt, read_sampling, read_adjustments, read_logprobs, read_capabilities}) {
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
