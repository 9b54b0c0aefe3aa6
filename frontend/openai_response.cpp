#include "frontend/openai_response.hpp"

#include <algorithm>

#include <nlohmann/json.hpp>

namespace baton::frontend {
namespace {

using json = nlohmann::json;

std::string dump(const json& j) {
  // Invalid UTF-8 (which the server never sends on purpose) becomes U+FFFD, not an abort.
  return j.dump(-1, ' ', false, json::error_handler_t::replace);
}

bool chat(const completion_context& c) {
  return c.kind == api_kind::chat;
}

json extension(const completion_context& c) {
  const auto& a = c.accepted;
  return {{"request_id", static_cast<std::uint64_t>(a.request)},
          {"seed", a.seed},
          {"placement", a.placement},
          {"prefill_node", a.prefill_node},
          {"decode_node", a.decode_node}};
}

json usage_json(token_usage u) {
  return {{"prompt_tokens", u.prompt_tokens},
          {"completion_tokens", u.completion_tokens},
          {"total_tokens", u.prompt_tokens + u.completion_tokens}};
}

json bytes_of(std::string_view text) {
  json out = json::array();
  for (const char ch : text) out.push_back(static_cast<unsigned char>(ch));
  return out;
}

/// OpenAI's logprobs object for `tokens`: chat's {"content": [...]}, or completions'
/// {"tokens", "token_logprobs", "top_logprobs", "text_offset"} from `offset` on.
json logprobs_json(api_kind kind, std::span<const wire::client_logprobs> tokens,
                   std::size_t offset) {
  if (kind == api_kind::chat) {
    json content = json::array();
    for (const auto& t : tokens) {
      json top = json::array();
      for (const auto& alt : t.top) {
        top.push_back(
            {{"token", alt.text}, {"logprob", alt.logprob}, {"bytes", bytes_of(alt.text)}});
      }
      content.push_back({{"token", t.text},
                         {"logprob", t.logprob},
                         {"bytes", bytes_of(t.text)},
                         {"top_logprobs", std::move(top)}});
    }
    return {{"content", std::move(content)}, {"refusal", nullptr}};
  }
  json out = {{"tokens", json::array()},
              {"token_logprobs", json::array()},
              {"top_logprobs", json::array()},
              {"text_offset", json::array()}};
  for (const auto& t : tokens) {
    out["tokens"].push_back(t.text);
    out["token_logprobs"].push_back(t.logprob);
    json top = json::object();
    for (const auto& alt : t.top) top[alt.text] = alt.logprob;
    out["top_logprobs"].push_back(std::move(top));
    out["text_offset"].push_back(offset);
    offset += t.text.size();
  }
  return out;
}

/// A streamed chunk of choice `index` carrying `piece` (chat: the delta; completions: the
/// text).
json chunk(const completion_context& c, std::uint32_t index, json piece, std::string_view reason,
           json logprobs = nullptr) {
  json choice = {{"index", index},
                 {"logprobs", std::move(logprobs)},
                 {"finish_reason", reason.empty() ? json(nullptr) : json(reason)}};
  choice[chat(c) ? "delta" : "text"] = std::move(piece);
  json out = {{"id", c.id},
              {"object", chat(c) ? "chat.completion.chunk" : "text_completion"},
              {"created", c.created},
              {"model", c.model},
              {"system_fingerprint", "baton"},
              {"choices", json::array({std::move(choice)})}};
  if (c.include_usage) out["usage"] = nullptr;
  return out;
}

}  // namespace

std::string error_body(const api_error& e) {
  const json body = {{"error",
                      {{"message", e.message},
                       {"type", e.type},
                       {"param", e.param.empty() ? json(nullptr) : json(e.param)},
                       {"code", e.code.empty() ? json(nullptr) : json(e.code)}}}};
  return dump(body) + "\n";
}

api_error from_rejection(errc code, std::string message) {
  switch (code) {
    case errc::invalid_argument: return bad_request(std::move(message));
    case errc::overloaded: return {429, std::move(message), "rate_limit_error", {}, "overloaded"};
    case errc::timed_out: return {504, std::move(message), "timeout_error", {}, "timed_out"};
    case errc::disconnected:
      return {503, std::move(message), "service_unavailable", {}, "disconnected"};
    case errc::not_found:
      return {404, std::move(message), "invalid_request_error", {}, "not_found"};
    case errc::unavailable:
      return {503, std::move(message), "service_unavailable", {}, "unavailable"};
    case errc::failed: break;
  }
  return {500, std::move(message), "server_error", {}, "failed"};
}

std::string first_chunk(const completion_context& c, std::uint32_t index, bool echo) {
  json first = chunk(c, index,
                     chat(c) ? json{{"role", "assistant"}, {"content", ""}}
                             : json(echo ? c.accepted.prompt_text : ""),
                     {});
  if (index == 0) first["baton"] = extension(c);
  return dump(first);
}

std::string text_chunk(const completion_context& c, std::uint32_t index, std::string_view text,
                       std::span<const wire::client_logprobs> logprobs, std::size_t offset) {
  return dump(chunk(c, index, chat(c) ? json{{"content", text}} : json(text), {},
                    c.logprobs ? logprobs_json(c.kind, logprobs, offset) : json(nullptr)));
}

std::string final_chunk(const completion_context& c, std::uint32_t index, std::string_view reason) {
  return dump(chunk(c, index, chat(c) ? json::object() : json(""), reason));
}

std::string usage_chunk(const completion_context& c, token_usage u) {
  json last = chunk(c, 0, nullptr, {});
  last["choices"] = json::array();
  last["usage"] = usage_json(u);
  return dump(last);
}

std::string whole_answer(const completion_context& c, std::span<const choice_answer> choices,
                         token_usage u) {
  json list = json::array();
  for (std::uint32_t i = 0; i < choices.size(); ++i) {
    const auto& a = choices[i];
    json choice = {{"index", i},
                   {"logprobs", c.logprobs ? logprobs_json(c.kind, a.logprobs, 0) : json(nullptr)},
                   {"finish_reason", a.reason}};
    if (chat(c)) {
      choice["message"] = {{"role", "assistant"}, {"content", a.text}, {"refusal", nullptr}};
    } else {
      choice["text"] = a.text;
    }
    list.push_back(std::move(choice));
  }
  const json body = {{"id", c.id},
                     {"object", chat(c) ? "chat.completion" : "text_completion"},
                     {"created", c.created},
                     {"model", c.model},
                     {"system_fingerprint", "baton"},
                     {"choices", std::move(list)},
                     {"usage", usage_json(u)},
                     {"baton", extension(c)}};
  return dump(body);
}

std::string model_body(std::string_view model, bool list) {
  json one = {{"id", model}, {"object", "model"}, {"created", 0}, {"owned_by", "baton"}};
  if (!list) return dump(one);
  return dump({{"object", "list"}, {"data", json::array({std::move(one)})}});
}

std::size_t complete_utf8_prefix(std::string_view bytes) noexcept {
  const std::size_t n = bytes.size();
  for (std::size_t back = 1; back <= std::min<std::size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(bytes[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // a continuation byte: look further back
    const std::size_t need = c < 0x80             ? 1
                             : (c & 0xE0) == 0xC0 ? 2
                             : (c & 0xF0) == 0xE0 ? 3
                             : (c & 0xF8) == 0xF0 ? 4
                                                  : 1;  // not a lead byte: nothing to wait for
    return back >= need ? n : n - back;
  }
  return n;  // only continuation bytes: invalid, and nothing will complete them
}

std::string text_filter::feed(std::string_view bytes, bool& stopped, bool may_stop) {
  pending_ += bytes;
  const std::size_t whole = complete_utf8_prefix(pending_);
  held_.append(pending_, 0, whole);
  pending_.erase(0, whole);
  if (!may_stop) {  // whole characters go out; stop strings are looked for from here on
    std::string out = std::move(held_);
    held_.clear();
    return out;
  }
  std::size_t first = std::string::npos;
  for (const auto& s : stops_) first = std::min(first, held_.find(s));
  if (first != std::string::npos) {
    stopped = true;
    std::string out = held_.substr(0, first);
    held_.clear();
    pending_.clear();
    return out;
  }
  // Hold back the longest tail that may still grow into a stop string.
  std::size_t keep = 0;
  for (const auto& s : stops_) {
    for (std::size_t n = std::min(s.size() - 1, held_.size()); n > keep; --n) {
      if (std::string_view(held_).ends_with(std::string_view(s).substr(0, n))) {
        keep = n;
        break;
      }
    }
  }
  std::string out = held_.substr(0, held_.size() - keep);
  held_.erase(0, held_.size() - keep);
  return out;
}

std::string text_filter::flush() {
  std::string out = std::move(held_);
  out += pending_;
  held_.clear();
  pending_.clear();
  return out;
}

}  // namespace baton::frontend
