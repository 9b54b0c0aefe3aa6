// Bounds of every frame, checked on decode and on encode (docs/wire-format.md, "Limits").
#include <cmath>
#include <limits>

#include <fmt/format.h>

#include "schemas/detail.hpp"
#include "schemas/sampling_codec.hpp"

namespace baton::wire::detail {
namespace {

checked<> out_of_bounds(std::string_view field, std::string what) {
  return reject(reject_reason::out_of_bounds, fmt::format("{}: {}", field, what));
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == ':' || c == '/' || c == '@' || c == '[' || c == ']';
}

/// Names and addresses: 1..max_name_bytes of [A-Za-z0-9._:/@[]-] (or empty if optional).
checked<> check_name(const std::string& s, const codec_limits& l, std::string_view field,
                     bool required = true) {
  if (s.empty()) {
    return required ? out_of_bounds(field, "empty, expected a name") : checked<>{};
  }
  if (s.size() > l.max_name_bytes) {
    return out_of_bounds(field, fmt::format("{} bytes, limit {}", s.size(), l.max_name_bytes));
  }
  for (char c : s) {
    if (!name_char(c)) {
      return out_of_bounds(field, fmt::format("byte 0x{:02x} is not allowed in a name",
                                              static_cast<unsigned char>(c)));
    }
  }
  return {};
}

checked<> check_size(std::size_t size, std::size_t limit, std::string_view field,
                     std::string_view unit) {
  if (size > limit) return out_of_bounds(field, fmt::format("{} {}, limit {}", size, unit, limit));
  return {};
}

checked<> check_text(const std::string& s, const codec_limits& l, std::string_view field) {
  return check_size(s.size(), l.max_text_bytes, field, "bytes");
}

checked<> check_sampling(const sampling& s, std::string_view field) {
  if (auto problem = sampling_problem(s)) return out_of_bounds(field, std::move(*problem));
  return {};
}

checked<> check_logprobs(const std::vector<token_logprobs>& l, std::size_t tokens,
                         std::string_view field) {
  if (auto problem = logprobs_problem(l, tokens)) return out_of_bounds(field, std::move(*problem));
  return {};
}

/// A request's choices `choice` .. `choice + choices - 1`: at most max_choices of them, and
/// several only while nothing was delivered.
checked<> check_choices(std::uint32_t choice, std::uint32_t choices,
                        const std::vector<std::uint32_t>& tokens, std::uint32_t prompt_length,
                        std::string_view field) {
  if (choices == 0 || choices > max_choices || choice >= max_choices ||
      choice + choices > max_choices) {
    return out_of_bounds(field, fmt::format("choices {}..{} not within [0, {})", choice,
                                            choice + choices, max_choices));
  }
  if (choices > 1 && tokens.size() != prompt_length) {
    return out_of_bounds(field, "several choices of a request with tokens delivered");
  }
  return {};
}

checked<> check_kv(const kv_descriptor& kv, const codec_limits& l, std::string_view field) {
  if (auto ok = check_name(kv.node, l, fmt::format("{}.node", field)); !ok) return ok;
  if (auto ok = check_size(kv.block_ids.size(), l.max_blocks, field, "block ids"); !ok) return ok;
  if (!kv.checksums.empty() && kv.checksums.size() != kv.block_ids.size()) {
    return out_of_bounds(
        field, fmt::format("{} checksums for {} blocks", kv.checksums.size(), kv.block_ids.size()));
  }
  // block_bytes < 2^32 and block_ids.size() <= max_blocks < 2^32: the product fits.
  const auto expected_length = std::uint64_t{kv.block_bytes} * kv.block_ids.size();
  if (kv.length != expected_length) {
    return out_of_bounds(field, fmt::format("length {} != blockBytes {} x {} blocks", kv.length,
                                            kv.block_bytes, kv.block_ids.size()));
  }
  if (kv.offset > std::numeric_limits<std::uint64_t>::max() - kv.length) {
    return out_of_bounds(field, "offset + length overflows");
  }
  return {};
}

checked<> check_tokens(const std::vector<std::uint32_t>& tokens, std::uint32_t prompt_length,
                       const codec_limits& l, std::string_view field) {
  if (tokens.empty()) return out_of_bounds(field, "no tokens");
  if (auto ok = check_size(tokens.size(), l.max_tokens, field, "tokens"); !ok) return ok;
  if (prompt_length == 0 || prompt_length > tokens.size()) {
    return out_of_bounds(
        field, fmt::format("promptLength {} not in [1, {}]", prompt_length, tokens.size()));
  }
  return {};
}

checked<> check_member(const member& m, const codec_limits& l, std::string_view field) {
  if (auto ok = check_name(m.node, l, field); !ok) return ok;
  if (auto ok = check_name(m.device, l, field); !ok) return ok;
  if (m.roles.empty()) return out_of_bounds(field, fmt::format("{} has no roles", m.node));
  if (auto ok = check_size(m.roles.size(), l.max_roles, field, "roles"); !ok) return ok;
  if (auto ok = check_name(m.fabric_address, l, field); !ok) return ok;
  if (auto ok = check_name(m.suspecter, l, field, false); !ok) return ok;
  return check_name(m.admin_address, l, field, false);
}

checked<> check_members(const std::vector<member>& members, const codec_limits& l,
                        std::string_view field) {
  if (auto ok = check_size(members.size(), l.max_members, field, "members"); !ok) return ok;
  for (const auto& m : members) {
    if (auto ok = check_member(m, l, field); !ok) return ok;
  }
  return {};
}

struct body_checker {
  const codec_limits& l;

  checked<> operator()(const join& j) const {
    if (auto ok = check_member(j.member, l, "join.member"); !ok) return ok;
    return check_size(j.numerics_fingerprint.size(), l.max_name_bytes, "join.numericsFingerprint",
                      "bytes");
  }
  checked<> operator()(const join_reply& j) const {
    if (auto ok = check_text(j.reason, l, "joinReply.reason"); !ok) return ok;
    return check_members(j.members, l, "joinReply.members");
  }
  checked<> operator()(const heartbeat& h) const {
    return check_members(h.updates, l, "heartbeat.updates");
  }
  checked<> operator()(const leave& v) const { return check_text(v.reason, l, "leave.reason"); }
  checked<> operator()(const admit& a) const {
    if (auto ok = check_tokens(a.tokens, a.prompt_length, l, "admit.tokens"); !ok) return ok;
    if (auto ok = check_size(a.max_tokens, l.max_tokens, "admit.maxTokens", "tokens"); !ok) {
      return ok;
    }
    if (auto ok = check_sampling(a.params, "admit.sampling"); !ok) return ok;
    if (auto ok = check_choices(a.choice, a.choices, a.tokens, a.prompt_length, "admit.choices");
        !ok) {
      return ok;
    }
    return check_name(a.writer, l, "admit.writer", false);
  }
  checked<> operator()(const prefill& p) const {
    if (auto ok = check_tokens(p.tokens, p.prompt_length, l, "prefill.tokens"); !ok) return ok;
    if (auto ok = check_sampling(p.params, "prefill.sampling"); !ok) return ok;
    if (auto ok = check_choices(p.choice, p.choices, p.tokens, p.prompt_length, "prefill.choices");
        !ok) {
      return ok;
    }
    if (auto ok = check_kv(p.target, l, "prefill.target"); !ok) return ok;
    if (auto ok = check_name(p.decode.node, l, "prefill.decode.node"); !ok) return ok;
    return check_name(p.decode.actor, l, "prefill.decode.actor");
  }
  checked<> operator()(const prefill_done& p) const {
    if (p.first_tokens.empty() || p.first_tokens.size() > max_choices) {
      return out_of_bounds(
          "prefillDone.firstTokens",
          fmt::format("{} first tokens, expected 1 to {}", p.first_tokens.size(), max_choices));
    }
    if (auto ok = check_logprobs(p.logprobs, p.first_tokens.size(), "prefillDone.logprobs"); !ok) {
      return ok;
    }
    return check_size(p.checksums.size(), l.max_blocks, "prefillDone.checksums", "checksums");
  }
  checked<> operator()(const token_batch& t) const {
    if (t.tokens.empty()) return out_of_bounds("tokens.tokens", "no tokens");
    if (auto ok = check_size(t.tokens.size(), l.max_tokens, "tokens.tokens", "tokens"); !ok) {
      return ok;
    }
    if (t.first_position > std::numeric_limits<std::uint32_t>::max() - t.tokens.size()) {
      return out_of_bounds("tokens.firstPosition", "firstPosition + count overflows");
    }
    if (t.choice >= max_choices) {
      return out_of_bounds("tokens.choice",
                           fmt::format("{} is not below {}", t.choice, max_choices));
    }
    return check_logprobs(t.logprobs, t.tokens.size(), "tokens.logprobs");
  }
  checked<> operator()(const finish& f) const {
    if (f.choice >= max_choices) {
      return out_of_bounds("finish.choice",
                           fmt::format("{} is not below {}", f.choice, max_choices));
    }
    return {};
  }
  checked<> operator()(const stream_window&) const { return {}; }
  checked<> operator()(const claim& c) const {
    if (c.choices.empty() || c.choices.size() > max_choices) {
      return out_of_bounds("claim.choices", fmt::format("{} choices, expected 1 to {}",
                                                        c.choices.size(), max_choices));
    }
    for (std::size_t i = 0; i < c.choices.size(); ++i) {
      if (c.choices[i].choice >= max_choices) {
        return out_of_bounds("claim.choices", fmt::format("choice {} is not below {}",
                                                          c.choices[i].choice, max_choices));
      }
      for (std::size_t j = 0; j < i; ++j) {
        if (c.choices[j].choice == c.choices[i].choice) {
          return out_of_bounds("claim.choices",
                               fmt::format("choice {} named twice", c.choices[i].choice));
        }
      }
    }
    if (c.attempt_base > std::numeric_limits<std::uint32_t>::max() - max_choices) {
      return out_of_bounds("claim.attemptBase", "attemptBase + choices overflows");
    }
    return {};
  }
  checked<> operator()(const claimed& c) const {
    if (c.attempts.size() > max_choices) {
      return out_of_bounds("claimed.attempts", fmt::format("{} attempts, expected at most {}",
                                                           c.attempts.size(), max_choices));
    }
    for (const auto& a : c.attempts) {
      if (a.choices.empty() || a.choices.size() > max_choices) {
        return out_of_bounds(
            "claimed.attempts.choices",
            fmt::format("{} choices, expected 1 to {}", a.choices.size(), max_choices));
      }
      for (const auto choice : a.choices) {
        if (choice >= max_choices) {
          return out_of_bounds("claimed.attempts.choices",
                               fmt::format("choice {} is not below {}", choice, max_choices));
        }
      }
    }
    return {};
  }
  checked<> operator()(const cancel& c) const { return check_text(c.reason, l, "cancel.reason"); }
  checked<> operator()(const abort_attempt& a) const {
    return check_text(a.message, l, "abort.message");
  }
  checked<> operator()(const monitor& m) const {
    if (auto ok = check_name(m.watcher.node, l, "monitor.watcher.node"); !ok) return ok;
    return check_name(m.watcher.actor, l, "monitor.watcher.actor");
  }
  checked<> operator()(const down& d) const {
    if (auto ok = check_name(d.actor.node, l, "down.actor.node"); !ok) return ok;
    if (auto ok = check_name(d.actor.actor, l, "down.actor.actor"); !ok) return ok;
    return check_text(d.reason, l, "down.reason");
  }
  checked<> operator()(const failure& f) const {
    return check_text(f.message, l, "failure.message");
  }
  checked<> operator()(const credit& c) const {
    if (c.frames == 0) return out_of_bounds("credit.frames", "zero credit");
    return {};
  }
};

}  // namespace

checked<> validate(const frame& f, const codec_limits& limits) {
  if (auto ok = check_name(f.source.node, limits, "source.node"); !ok) return ok;
  if (auto ok = check_name(f.source.actor, limits, "source.actor"); !ok) return ok;
  if (auto ok = check_name(f.target.node, limits, "target.node"); !ok) return ok;
  if (auto ok = check_name(f.target.actor, limits, "target.actor"); !ok) return ok;
  if (auto ok = check_size(f.auth_tag.size(), limits.max_auth_tag_bytes, "authTag", "bytes"); !ok) {
    return ok;
  }
  return std::visit(body_checker{limits}, f.body);
}

}  // namespace baton::wire::detail
