// The native client protocol's codec: bytes <-> schemas/client.hpp structs. Like the
// frame codec (codec.cpp), it catches kj::Exception here and nowhere else.
#include "schemas/client_codec.hpp"

#include <bit>
#include <cmath>
#include <cstring>
#include <limits>
#include <string_view>

#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/io.h>

#include "schemas/client.capnp.h"
#include "schemas/sampling_codec.hpp"

namespace baton::wire {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the length prefix is written and read as a little-endian word");
static_assert(static_cast<int>(gen::ErrorCode::FAILED) == static_cast<int>(errc::failed));
static_assert(static_cast<int>(gen::ErrorCode::UNAVAILABLE) == static_cast<int>(errc::unavailable));
static_assert(static_cast<int>(gen::FinishReason::CANCELLED) ==
              static_cast<int>(finish_reason::cancelled));

using checked = expected<void>;

tl::unexpected<error> bad(std::string_view field, std::string what) {
  return fail(errc::invalid_argument, fmt::format("{}: {}", field, what));
}

checked check_size(std::size_t size, std::size_t limit, std::string_view field,
                   std::string_view unit) {
  if (size > limit) return bad(field, fmt::format("{} {}, limit {}", size, unit, limit));
  return {};
}

bool name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
         c == '_' || c == '-' || c == ':' || c == '/' || c == '@' || c == '[' || c == ']';
}

/// Node names and the placement: empty, or up to max_name_bytes of a name's characters.
checked check_name(const std::string& s, const client_limits& l, std::string_view field) {
  if (auto ok = check_size(s.size(), l.max_name_bytes, field, "bytes"); !ok) return ok;
  for (char c : s) {
    if (!name_char(c)) {
      return bad(field, fmt::format("byte 0x{:02x} is not allowed in a name",
                                    static_cast<unsigned char>(c)));
    }
  }
  return {};
}

checked check_sampling(const sampling& s, bool has_seed) {
  if (auto problem = detail::sampling_problem(s)) return bad("generate.sampling", *problem);
  // As in llama2.c and `baton generate`, seed 0 means "pick one": say so with hasSeed.
  if (has_seed && s.seed == 0) return bad("generate.sampling", "hasSeed with seed 0");
  return {};
}

checked check_chunk(const token_chunk& v, const client_limits& l) {
  if (v.tokens.empty() && !v.finish) {
    return bad("tokens.tokens", "empty, expected at least one or the choice's end");
  }
  if (auto ok = check_size(v.tokens.size(), l.max_chunk_tokens, "tokens.tokens", "tokens"); !ok) {
    return ok;
  }
  if (v.first_position > std::numeric_limits<std::uint32_t>::max() - v.tokens.size()) {
    return bad("tokens.firstPosition",
               fmt::format("{} + {} tokens overflows 32 bits", v.first_position, v.tokens.size()));
  }
  if (v.choice >= max_choices) {
    return bad("tokens.choice", fmt::format("{} is not below {}", v.choice, max_choices));
  }
  if (!v.logprobs.empty() && v.logprobs.size() != v.tokens.size()) {
    return bad("tokens.logprobs",
               fmt::format("{} logprobs for {} tokens", v.logprobs.size(), v.tokens.size()));
  }
  std::size_t text_bytes = v.text.size();
  for (const auto& t : v.logprobs) {
    if (t.top.size() > max_top_logprobs || std::isnan(t.logprob) || t.logprob > 0.0f) {
      return bad("tokens.logprobs", "a log-probability above 0 or too many alternatives");
    }
    text_bytes += t.text.size();
    for (const auto& alt : t.top) {
      if (std::isnan(alt.logprob) || alt.logprob > 0.0f) {
        return bad("tokens.logprobs", "an alternative's log-probability is above 0");
      }
      text_bytes += alt.text.size();
    }
  }
  return check_size(text_bytes, l.max_text_bytes, "tokens.text", "bytes");
}

checked validate(const client_message& m, const client_limits& l) {
  return std::visit(
      [&l](const auto& v) -> checked {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, generate_request>) {
          if (auto ok = check_size(v.prompt.size(), l.max_prompt_bytes, "generate.prompt", "bytes");
              !ok) {
            return ok;
          }
          if (v.n == 0 || v.n > max_choices) {
            return bad("generate.n", fmt::format("{} is not in [1, {}]", v.n, max_choices));
          }
          if (v.resume) {
            if (v.resume->choices.size() != v.n) {
              return bad("generate.resume.choices",
                         fmt::format("{} choices for n {}", v.resume->choices.size(), v.n));
            }
            if (!v.has_seed) return bad("generate.resume", "a resumed request carries its seed");
            for (const auto& c : v.resume->choices) {
              if (auto ok = check_size(c.tokens.size(), l.max_chunk_tokens,
                                       "generate.resume.choices.tokens", "tokens");
                  !ok) {
                return ok;
              }
            }
          }
          return check_sampling(v.params, v.has_seed);
        } else if constexpr (std::is_same_v<T, accepted>) {
          if (auto ok = check_size(v.prompt_text.size(), l.max_prompt_bytes, "accepted.promptText",
                                   "bytes");
              !ok) {
            return ok;
          }
          if (auto ok = check_name(v.prefill_node, l, "accepted.prefillNode"); !ok) return ok;
          if (auto ok = check_name(v.decode_node, l, "accepted.decodeNode"); !ok) return ok;
          return check_name(v.placement, l, "accepted.placement");
        } else if constexpr (std::is_same_v<T, token_chunk>) {
          return check_chunk(v, l);
        } else if constexpr (std::is_same_v<T, rejected>) {
          return check_size(v.message.size(), l.max_text_bytes, "rejected.message", "bytes");
        } else {
          return {};
        }
      },
      m);
}

template <class To, class From>
expected<To> enum_from(From raw, To last, std::string_view field) {
  const auto value = static_cast<unsigned>(raw);
  if (value > static_cast<unsigned>(last)) {
    return fail(errc::invalid_argument, fmt::format("{}: unknown enum value {}", field, value));
  }
  return static_cast<To>(value);
}

std::string text_of(capnp::Text::Reader t) {
  return std::string(t.cStr(), t.size());
}

std::string bytes_of(capnp::Data::Reader d) {
  return std::string(reinterpret_cast<const char*>(d.begin()), d.size());
}

capnp::Data::Reader data_of(const std::string& s) {
  return {reinterpret_cast<const kj::byte*>(s.data()), s.size()};
}

/// Converts a reader into a plain struct, checking the discriminant and enum values.
/// May throw kj::Exception, which decode_client_message catches.
expected<client_message> from_capnp(gen::ClientMessage::Reader r) {
  switch (r.which()) {
    case gen::ClientMessage::GENERATE: {
      auto g = r.getGenerate();
      generate_request out{g.getClientTag(),
                           text_of(g.getPrompt()),
                           g.getMaxTokens(),
                           g.getMaxPositions(),
                           detail::sampling_from(g.getSampling()),
                           g.getHasSeed(),
                           g.getTimeoutMs(),
                           std::max<std::uint32_t>(1, g.getN())};
      out.api_key = text_of(g.getApiKey());
      if (g.hasResume()) {
        auto resume = g.getResume();
        resume_state s{request_id{resume.getRequestId()}, {}};
        for (auto c : resume.getChoices()) {
          auto reason = enum_from(c.getReason(), finish_reason::cancelled, "resume.reason");
          if (!reason) return tl::unexpected(reason.error());
          std::vector<std::uint32_t> tokens;
          tokens.reserve(c.getTokens().size());
          for (auto t : c.getTokens()) tokens.push_back(t);
          s.choices.push_back({std::move(tokens), c.getDone(), *reason});
        }
        out.resume = std::move(s);
      }
      return out;
    }
    case gen::ClientMessage::CANCEL: return cancel_request{r.getCancel().getClientTag()};
    case gen::ClientMessage::ACCEPTED: {
      auto a = r.getAccepted();
      return accepted{
          a.getClientTag(),           request_id{a.getRequestId()}, a.getSeed(),
          a.getPromptTokens(),        text_of(a.getPromptText()),   text_of(a.getPrefillNode()),
          text_of(a.getDecodeNode()), text_of(a.getPlacement())};
    }
    case gen::ClientMessage::TOKENS: {
      auto t = r.getTokens();
      token_chunk out{t.getClientTag(), t.getFirstPosition(), {}, text_of(t.getText())};
      out.tokens.reserve(t.getTokens().size());
      for (auto id : t.getTokens()) out.tokens.push_back(id);
      out.choice = t.getChoice();
      for (auto l : t.getLogprobs()) {
        client_logprobs c{l.getToken(), l.getLogprob(), bytes_of(l.getText()), {}};
        for (auto alt : l.getTop()) {
          c.top.push_back({alt.getToken(), alt.getLogprob(), bytes_of(alt.getText())});
        }
        out.logprobs.push_back(std::move(c));
      }
      if (t.getChoiceFinished()) {
        auto reason = enum_from(t.getReason(), finish_reason::cancelled, "tokens.reason");
        if (!reason) return tl::unexpected(reason.error());
        out.finish = *reason;
      }
      return out;
    }
    case gen::ClientMessage::FINISHED: {
      auto f = r.getFinished();
      auto reason = enum_from(f.getReason(), finish_reason::cancelled, "finished.reason");
      if (!reason) return tl::unexpected(reason.error());
      return finished{f.getClientTag(), *reason, f.getPromptTokens(), f.getCompletionTokens(),
                      f.getRouterMicros()};
    }
    case gen::ClientMessage::REJECTED: {
      auto j = r.getRejected();
      auto code = enum_from(j.getCode(), errc::unavailable, "rejected.code");
      if (!code) return tl::unexpected(code.error());
      return rejected{j.getClientTag(), *code, text_of(j.getMessage())};
    }
  }
  return fail(errc::invalid_argument,
              fmt::format("message: unknown union member {}", static_cast<unsigned>(r.which())));
}

void to_capnp(const client_message& m, gen::ClientMessage::Builder b) {
  std::visit(
      [&b](const auto& v) {
        using T = std::decay_t<decltype(v)>;
        if constexpr (std::is_same_v<T, generate_request>) {
          auto g = b.initGenerate();
          g.setClientTag(v.client_tag);
          g.setPrompt(capnp::Text::Reader(v.prompt.data(), v.prompt.size()));
          g.setMaxTokens(v.max_tokens);
          g.setMaxPositions(v.max_positions);
          detail::fill(v.params, g.initSampling());
          g.setHasSeed(v.has_seed);
          g.setTimeoutMs(v.timeout_ms);
          g.setN(v.n);
          if (!v.api_key.empty())
            g.setApiKey(capnp::Text::Reader(v.api_key.data(), v.api_key.size()));
          if (v.resume) {
            auto resume = g.initResume();
            resume.setRequestId(static_cast<std::uint64_t>(v.resume->request));
            auto list = resume.initChoices(static_cast<capnp::uint>(v.resume->choices.size()));
            for (capnp::uint i = 0; i < v.resume->choices.size(); ++i) {
              const auto& c = v.resume->choices[i];
              auto tokens = list[i].initTokens(static_cast<capnp::uint>(c.tokens.size()));
              for (capnp::uint t = 0; t < c.tokens.size(); ++t) tokens.set(t, c.tokens[t]);
              list[i].setDone(c.done);
              list[i].setReason(static_cast<gen::FinishReason>(c.reason));
            }
          }
        } else if constexpr (std::is_same_v<T, cancel_request>) {
          b.initCancel().setClientTag(v.client_tag);
        } else if constexpr (std::is_same_v<T, accepted>) {
          auto a = b.initAccepted();
          a.setClientTag(v.client_tag);
          a.setRequestId(static_cast<std::uint64_t>(v.request));
          a.setSeed(v.seed);
          a.setPromptTokens(v.prompt_tokens);
          a.setPromptText(capnp::Text::Reader(v.prompt_text.data(), v.prompt_text.size()));
          a.setPrefillNode(capnp::Text::Reader(v.prefill_node.data(), v.prefill_node.size()));
          a.setDecodeNode(capnp::Text::Reader(v.decode_node.data(), v.decode_node.size()));
          a.setPlacement(capnp::Text::Reader(v.placement.data(), v.placement.size()));
        } else if constexpr (std::is_same_v<T, token_chunk>) {
          auto t = b.initTokens();
          t.setClientTag(v.client_tag);
          t.setFirstPosition(v.first_position);
          auto list = t.initTokens(static_cast<unsigned>(v.tokens.size()));
          for (unsigned i = 0; i < v.tokens.size(); ++i) list.set(i, v.tokens[i]);
          t.setText(capnp::Text::Reader(v.text.data(), v.text.size()));
          t.setChoice(v.choice);
          auto logprobs = t.initLogprobs(static_cast<unsigned>(v.logprobs.size()));
          for (unsigned i = 0; i < v.logprobs.size(); ++i) {
            const auto& from = v.logprobs[i];
            logprobs[i].setToken(from.token);
            logprobs[i].setLogprob(from.logprob);
            logprobs[i].setText(data_of(from.text));
            auto top = logprobs[i].initTop(static_cast<unsigned>(from.top.size()));
            for (unsigned j = 0; j < from.top.size(); ++j) {
              top[j].setToken(from.top[j].token);
              top[j].setLogprob(from.top[j].logprob);
              top[j].setText(data_of(from.top[j].text));
            }
          }
          t.setChoiceFinished(v.finish.has_value());
          if (v.finish) t.setReason(static_cast<gen::FinishReason>(*v.finish));
        } else if constexpr (std::is_same_v<T, finished>) {
          auto f = b.initFinished();
          f.setClientTag(v.client_tag);
          f.setReason(static_cast<gen::FinishReason>(v.reason));
          f.setPromptTokens(v.prompt_tokens);
          f.setCompletionTokens(v.completion_tokens);
          f.setRouterMicros(v.router_us);
        } else {
          static_assert(std::is_same_v<T, rejected>);
          auto j = b.initRejected();
          j.setClientTag(v.client_tag);
          j.setCode(static_cast<gen::ErrorCode>(v.code));
          j.setMessage(capnp::Text::Reader(v.message.data(), v.message.size()));
        }
      },
      m);
}

expected<client_message> parse(kj::ArrayPtr<const capnp::word> words, const client_limits& l) {
  capnp::ReaderOptions options;
  // Each word is visited by the full traversal and once more by the conversion; more
  // than that is a pointer-amplification attack.
  options.traversalLimitInWords = 4 * words.size() + 64;
  options.nestingLimit = l.nesting_limit;
  capnp::FlatArrayMessageReader reader(words, options);
  if (reader.getEnd() != words.end()) {
    return fail(errc::invalid_argument,
                fmt::format("message: {} bytes trail the message",
                            (words.end() - reader.getEnd()) * sizeof(capnp::word)));
  }
  // Readers validate lazily: walk every pointer now, under the limits.
  (void)reader.getRoot<capnp::AnyPointer>().targetSize();
  auto converted = from_capnp(reader.getRoot<gen::ClientMessage>());
  if (!converted) return converted;
  if (auto ok = validate(*converted, l); !ok) return tl::unexpected(ok.error());
  return converted;
}

}  // namespace

const char* client_message_name(const client_message& m) noexcept {
  static constexpr const char* names[] = {"generate", "cancel",   "accepted",
                                          "tokens",   "finished", "rejected"};
  static_assert(std::size(names) == std::variant_size_v<client_message>);
  return names[m.index()];
}

expected<std::vector<std::byte>> encode_client_frame(const client_message& m,
                                                     const client_limits& limits) {
  if (auto ok = validate(m, limits); !ok) {
    return fail(errc::invalid_argument, fmt::format("encode: {}", ok.error().message));
  }
  try {
    capnp::MallocMessageBuilder builder(64);
    to_capnp(m, builder.initRoot<gen::ClientMessage>());
    const std::size_t bytes = capnp::computeSerializedSizeInWords(builder) * sizeof(capnp::word);
    if (bytes > limits.max_message_bytes) {
      return fail(errc::invalid_argument,
                  fmt::format("encode: {} message of {} bytes, limit {}", client_message_name(m),
                              bytes, limits.max_message_bytes));
    }
    std::vector<std::byte> out(client_length_bytes + bytes);
    const auto length = static_cast<std::uint32_t>(bytes);
    std::memcpy(out.data(), &length, sizeof length);
    kj::ArrayOutputStream stream(
        kj::arrayPtr(reinterpret_cast<kj::byte*>(out.data() + client_length_bytes), bytes));
    capnp::writeMessage(stream, builder);
    return out;
  } catch (const kj::Exception& e) {
    return fail(errc::failed, fmt::format("encode: {}", e.getDescription().cStr()));
  }
}

expected<std::size_t> client_frame_length(std::span<const std::byte, client_length_bytes> prefix,
                                          const client_limits& limits) {
  std::uint32_t length = 0;
  std::memcpy(&length, prefix.data(), sizeof length);
  // The smallest message: a one-segment table and the root pointer.
  if (length < 16 || length % sizeof(capnp::word) != 0 || length > limits.max_message_bytes) {
    return fail(errc::invalid_argument,
                fmt::format("frame length {} is not a multiple of 8 in [16, {}]", length,
                            limits.max_message_bytes));
  }
  return std::size_t{length};
}

expected<client_message> decode_client_message(std::span<const std::byte> bytes,
                                               const client_limits& limits) {
  if (bytes.size() < 16 || bytes.size() % sizeof(capnp::word) != 0 ||
      bytes.size() > limits.max_message_bytes) {
    return fail(errc::invalid_argument,
                fmt::format("message of {} bytes; expected a multiple of 8 in [16, {}]",
                            bytes.size(), limits.max_message_bytes));
  }
  // Cap'n Proto reads words in place; a stream buffer need not be aligned, so copy.
  std::vector<std::uint64_t> aligned;
  const auto* first = reinterpret_cast<const capnp::word*>(bytes.data());
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(std::uint64_t) != 0) {
    aligned.resize(bytes.size() / sizeof(std::uint64_t));
    std::memcpy(aligned.data(), bytes.data(), bytes.size());
    first = reinterpret_cast<const capnp::word*>(aligned.data());
  }
  try {
    auto result = parse(kj::arrayPtr(first, bytes.size() / sizeof(capnp::word)), limits);
    if (!result) return fail(result.error(), "client message rejected: ");
    return result;
  } catch (const kj::Exception& e) {
    return fail(errc::invalid_argument,
                fmt::format("client message rejected: {}", e.getDescription().cStr()));
  }
}

}  // namespace baton::wire
