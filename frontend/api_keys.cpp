#include "frontend/api_keys.hpp"

#include <algorithm>
#include <cmath>
#include <system_error>
#include <tuple>
#include <utility>

#include <fmt/format.h>
#include <openssl/sha.h>
#include <spdlog/spdlog.h>
#include <toml++/toml.h>

#include "base/private_file.hpp"

namespace baton::frontend {
namespace {

constexpr std::size_t min_key_chars = 16;

std::string digest_of(std::string_view key) {
  std::string out(SHA256_DIGEST_LENGTH, '\0');
  SHA256(reinterpret_cast<const unsigned char*>(key.data()), key.size(),
         reinterpret_cast<unsigned char*>(out.data()));
  return out;
}

std::string where(const std::string& file, const toml::node& n) {
  return fmt::format("{}:{}", file, n.source().begin.line);
}

}  // namespace

expected<api_keys> api_keys::load(const std::filesystem::path& file) {
  auto text = read_private_file(file, "the API keys");
  if (!text) return tl::unexpected(text.error());
  return parse(*text, file.string());
}

expected<api_keys> api_keys::parse(std::string_view text, const std::string& file) {
  toml::table doc;
  try {
    doc = toml::parse(text, file);
  } catch (const toml::parse_error& e) {
    return fail(errc::invalid_argument,
                fmt::format("{}:{}: {}", file, e.source().begin.line, e.description()));
  }
  api_keys out;
  for (const auto& [name, node] : doc) {
    if (name.str() != "key") {
      return fail(errc::invalid_argument,
                  fmt::format("{}: unknown table or key '{}' (expected [[key]] tables)",
                              where(file, node), name.str()));
    }
  }
  const auto* list = doc["key"].as_array();
  if (doc.contains("key") && list == nullptr) {
    return fail(errc::invalid_argument,
                fmt::format("{}: 'key' must be [[key]] tables", where(file, *doc.get("key"))));
  }
  if (list == nullptr) return out;  // no keys: nothing is admitted
  for (const auto& entry : *list) {
    const auto* t = entry.as_table();
    if (t == nullptr) {
      return fail(errc::invalid_argument,
                  fmt::format("{}: expected a [[key]] table", where(file, entry)));
    }
    for (const auto& [field, value] : *t) {
      const auto f = field.str();
      if (f != "name" && f != "key" && f != "max_streams" && f != "tokens_per_minute") {
        return fail(errc::invalid_argument,
                    fmt::format("{}: unknown field '{}' (expected name, key, max_streams, "
                                "tokens_per_minute)",
                                where(file, value), f));
      }
    }
    const auto text_field = [&](const char* f) -> expected<std::string> {
      const auto* v = t->get(f);
      if (v == nullptr) {
        return fail(errc::invalid_argument,
                    fmt::format("{}: a [[key]] without '{}'", where(file, entry), f));
      }
      if (!v->is_string()) {
        return fail(errc::invalid_argument,
                    fmt::format("{}: '{}' must be a string", where(file, *v), f));
      }
      return **v->as_string();
    };
    const auto count_field = [&](const char* f) -> expected<std::uint64_t> {
      const auto* v = t->get(f);
      if (v == nullptr) return 0;
      if (!v->is_integer() || **v->as_integer() < 0) {
        return fail(errc::invalid_argument,
                    fmt::format("{}: '{}' must be a whole number, 0 or more", where(file, *v), f));
      }
      return static_cast<std::uint64_t>(**v->as_integer());
    };
    auto name = text_field("name");
    if (!name) return tl::unexpected(name.error());
    auto key = text_field("key");
    if (!key) return tl::unexpected(key.error());
    if (key->size() < min_key_chars) {
      return fail(errc::invalid_argument,
                  fmt::format("{}: the key of '{}' has {} characters; at least {} are required",
                              where(file, *t->get("key")), *name, key->size(), min_key_chars));
    }
    auto streams = count_field("max_streams");
    if (!streams) return tl::unexpected(streams.error());
    auto tokens = count_field("tokens_per_minute");
    if (!tokens) return tl::unexpected(tokens.error());
    const auto digest = digest_of(*key);
    if (out.by_digest_.contains(digest)) {
      return fail(errc::invalid_argument, fmt::format("{}: the key of '{}' is also another entry's",
                                                      where(file, entry), *name));
    }
    if (std::any_of(out.keys_.begin(), out.keys_.end(),
                    [&](const api_key& k) { return k.name == *name; })) {
      return fail(errc::invalid_argument,
                  fmt::format("{}: a second key named '{}'", where(file, entry), *name));
    }
    out.by_digest_[digest] = out.keys_.size();
    out.keys_.push_back({*name,
                         static_cast<std::uint32_t>(std::min<std::uint64_t>(*streams, UINT32_MAX)),
                         *tokens});
  }
  return out;
}

const api_key* api_keys::named(std::string_view name) const {
  auto it =
      std::find_if(keys_.begin(), keys_.end(), [&](const api_key& k) { return k.name == name; });
  return it == keys_.end() ? nullptr : &*it;
}

const api_key* api_keys::find(std::string_view presented) const {
  auto it = by_digest_.find(digest_of(presented));
  return it == by_digest_.end() ? nullptr : &keys_[it->second];
}

namespace {

/// When `file` was last written and its size; a file that cannot be looked at has one
/// signature of its own, so that it is reported once, not once a second.
std::pair<std::filesystem::file_time_type, std::uintmax_t> signature(
    const std::filesystem::path& file) {
  std::error_code ec;
  const auto stamp = std::filesystem::last_write_time(file, ec);
  const auto size = ec ? 0 : std::filesystem::file_size(file, ec);
  if (ec) return {std::filesystem::file_time_type::min(), 0};
  return {stamp, size};
}

}  // namespace

api_gate::api_gate(std::filesystem::path file, api_keys keys)
    : file_(std::move(file)), keys_(std::move(keys)) {
  std::tie(stamp_, size_) = signature(file_);
}

void api_gate::maybe_reload(clock::time_point now) {
  if (now - checked_ < std::chrono::seconds(1)) return;
  checked_ = now;
  const auto [stamp, size] = signature(file_);
  if (stamp == stamp_ && size == size_) return;
  stamp_ = stamp;
  size_ = size;
  auto fresh = api_keys::load(file_);
  if (!fresh) {
    ++reload_failures_;
    spdlog::error("API keys not reloaded, the {} loaded before stay: {}", keys_.size(),
                  fresh.error().message);
    return;
  }
  ++reloads_;
  spdlog::info("API keys reloaded from {}: {} keys", file_.string(), fresh->size());
  keys_ = std::move(*fresh);
}

void api_gate::refill(const api_key& key, usage& u, clock::time_point now) const {
  const double capacity = static_cast<double>(key.tokens_per_minute);
  if (!u.started) {
    u.budget = capacity;
    u.started = true;
  } else {
    const double seconds = std::chrono::duration<double>(now - u.refilled).count();
    u.budget = std::min(capacity, u.budget + seconds * capacity / 60.0);
  }
  u.refilled = now;
}

key_verdict api_gate::check(std::string_view authorization, bool trusted_channel,
                            clock::time_point now) {
  maybe_reload(now);
  key_verdict v;
  constexpr std::string_view bearer = "Bearer ";
  if (authorization.empty()) {
    v.message =
        "You didn't provide an API key. You need to provide your API key in an Authorization "
        "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY).";
    return v;
  }
  if (!authorization.starts_with(bearer)) {
    v.message = "The Authorization header must be 'Bearer YOUR_KEY'.";
    return v;
  }
  if (!trusted_channel) {
    v.message =
        "API keys are accepted only over TLS or from loopback: this connection is neither, so "
        "the key crossed the network in the clear and is refused.";
    return v;
  }
  const auto* key = keys_.find(authorization.substr(bearer.size()));
  if (key == nullptr) {
    v.message = "Incorrect API key provided.";
    return v;
  }
  v.what = key_verdict::kind::admitted;
  v.name = key->name;
  return v;
}

key_verdict api_gate::admit(std::string_view authorization, bool trusted_channel,
                            clock::time_point now) {
  auto v = check(authorization, trusted_channel, now);
  if (v.what != key_verdict::kind::admitted) return v;
  const auto* key = keys_.find(authorization.substr(std::string_view("Bearer ").size()));
  auto& u = usage_[key->name];
  if (key->max_streams != 0 && u.open >= key->max_streams) {
    v.what = key_verdict::kind::limited;
    v.message = fmt::format("Rate limit reached for key '{}': {} generations open, its limit.",
                            key->name, key->max_streams);
    v.retry_after_s = 1;
    return v;
  }
  if (key->tokens_per_minute != 0) {
    refill(*key, u, now);
    if (u.budget <= 0) {
      const double rate = static_cast<double>(key->tokens_per_minute) / 60.0;
      v.what = key_verdict::kind::limited;
      v.retry_after_s = static_cast<std::uint32_t>(std::ceil((1.0 - u.budget) / rate));
      v.message = fmt::format(
          "Rate limit reached for key '{}' on tokens per min: limit {}. Please try again in "
          "{}s.",
          key->name, key->tokens_per_minute, v.retry_after_s);
      return v;
    }
  }
  ++u.open;
  return v;
}

void api_gate::finished(const std::string& name, std::uint64_t tokens, clock::time_point now) {
  auto it = usage_.find(name);
  if (it == usage_.end()) return;
  auto& u = it->second;
  if (u.open > 0) --u.open;
  const auto* key = keys_.named(name);
  if (key == nullptr || key->tokens_per_minute == 0) return;  // revoked, or no token limit
  // Refilled up to now, then charged: the budget may go below zero, and the next request
  // then waits until it is positive again.
  refill(*key, u, now);
  u.budget -= static_cast<double>(tokens);
}

}  // namespace baton::frontend
