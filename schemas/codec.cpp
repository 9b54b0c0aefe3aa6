#include "schemas/codec.hpp"

#include <bit>
#include <cstring>

#include <capnp/serialize.h>
#include <fmt/format.h>
#include <kj/io.h>

#include "schemas/detail.hpp"

namespace baton::wire {
namespace {

static_assert(std::endian::native == std::endian::little,
              "the frame header is read in place as little-endian words");

using detail::checked;
using detail::reject;

constexpr std::uint64_t header_word() {
  return std::uint64_t{frame_magic} | (std::uint64_t{wire_version} << 32);
}

checked<> check_framing(std::span<const std::byte> bytes, const codec_limits& limits) {
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % alignof(std::uint64_t) != 0) {
    return reject(reject_reason::misaligned, "buffer is not 8-byte aligned");
  }
  // The smallest frame: header, a one-segment table, and the root pointer.
  if (bytes.size() < frame_header_bytes + 16 || bytes.size() > limits.max_frame_bytes ||
      bytes.size() % 8 != 0) {
    return reject(reject_reason::bad_size,
                  fmt::format("{} bytes; expected a multiple of 8 in [24, {}]", bytes.size(),
                              limits.max_frame_bytes));
  }
  std::uint64_t header = 0;
  std::memcpy(&header, bytes.data(), sizeof header);
  if (static_cast<std::uint32_t>(header) != frame_magic || (header >> 48) != 0) {
    return reject(reject_reason::bad_header, fmt::format("header {:#018x} is not a Baton frame "
                                                         "header",
                                                         header));
  }
  const auto version = static_cast<std::uint16_t>(header >> 32);
  if (version != wire_version) {
    return reject(reject_reason::bad_version,
                  fmt::format("wire version {}, this node speaks {}", version, wire_version));
  }
  std::uint32_t segments_minus_one = 0;
  std::memcpy(&segments_minus_one, bytes.data() + frame_header_bytes, sizeof segments_minus_one);
  if (segments_minus_one >= limits.max_segments) {
    return reject(reject_reason::limit_exceeded,
                  fmt::format("{} segments, limit {}", std::uint64_t{segments_minus_one} + 1,
                              limits.max_segments));
  }
  return {};
}

checked<frame> parse(kj::ArrayPtr<const capnp::word> words, const codec_limits& limits) {
  capnp::ReaderOptions options;
  // Each word is visited once by the full traversal and once more by the conversion;
  // anything beyond that is a pointer-amplification attack.
  options.traversalLimitInWords = 4 * words.size() + 64;
  options.nestingLimit = limits.nesting_limit;
  capnp::FlatArrayMessageReader reader(words, options);
  if (reader.getEnd() != words.end()) {
    return reject(reject_reason::malformed,
                  fmt::format("{} bytes trail the message",
                              (words.end() - reader.getEnd()) * sizeof(capnp::word)));
  }
  // Readers validate lazily: walk every pointer now, under the limits, so that nothing
  // throws later from a getter outside the codec.
  (void)reader.getRoot<capnp::AnyPointer>().targetSize();
  auto converted = detail::from_capnp(reader.getRoot<gen::Envelope>());
  if (!converted) return converted;
  if (auto ok = detail::validate(*converted, limits); !ok) return tl::unexpected(ok.error());
  return converted;
}

}  // namespace

std::string_view to_string(reject_reason reason) noexcept {
  switch (reason) {
    case reject_reason::misaligned: return "misaligned";
    case reject_reason::bad_size: return "bad_size";
    case reject_reason::bad_header: return "bad_header";
    case reject_reason::bad_version: return "bad_version";
    case reject_reason::malformed: return "malformed";
    case reject_reason::limit_exceeded: return "limit_exceeded";
    case reject_reason::bad_discriminant: return "bad_discriminant";
    case reject_reason::out_of_bounds: return "out_of_bounds";
  }
  return "unknown";
}

expected<encoded_frame> encode(const frame& f, const codec_limits& limits) {
  if (auto ok = detail::validate(f, limits); !ok) {
    return fail(errc::invalid_argument, "encode: " + ok.error().message);
  }
  try {
    // Most control frames fit in 128 words; larger ones grow into further segments.
    capnp::MallocMessageBuilder builder(128);
    detail::to_capnp(f, builder.initRoot<gen::Envelope>());
    const std::size_t words = capnp::computeSerializedSizeInWords(builder);
    if (frame_header_bytes + words * sizeof(capnp::word) > limits.max_frame_bytes) {
      return fail(errc::invalid_argument,
                  fmt::format("encode: {} bytes, limit {}", frame_header_bytes + words * 8,
                              limits.max_frame_bytes));
    }
    encoded_frame out;
    out.words.assign(1 + words, 0);
    out.words[0] = header_word();
    kj::ArrayOutputStream stream(
        kj::arrayPtr(reinterpret_cast<kj::byte*>(out.words.data() + 1), words * 8));
    capnp::writeMessage(stream, builder);
    return out;
  } catch (const kj::Exception& e) {
    return fail(errc::failed, fmt::format("encode: {}", e.getDescription().cStr()));
  }
}

bool is_membership(std::span<const std::byte> bytes) noexcept {
  if (!check_framing(bytes, codec_limits{})) return false;
  try {
    const auto* first = reinterpret_cast<const capnp::word*>(bytes.data() + frame_header_bytes);
    capnp::FlatArrayMessageReader reader(
        kj::arrayPtr(first, (bytes.size() - frame_header_bytes) / sizeof(capnp::word)));
    switch (reader.getRoot<gen::Envelope>().getBody().which()) {
      case gen::Envelope::Body::JOIN:
      case gen::Envelope::Body::JOIN_REPLY:
      case gen::Envelope::Body::HEARTBEAT:
      case gen::Envelope::Body::LEAVE: return true;
      default: return false;
    }
  } catch (const kj::Exception&) {
    return false;
  }
}

expected<frame> decoder::decode(std::span<const std::byte> bytes) {
  checked<frame> result = check_framing(bytes, limits_).and_then([&]() -> checked<frame> {
    const auto* first = reinterpret_cast<const capnp::word*>(bytes.data() + frame_header_bytes);
    const auto count = (bytes.size() - frame_header_bytes) / sizeof(capnp::word);
    try {
      return parse(kj::arrayPtr(first, count), limits_);
    } catch (const kj::Exception& e) {
      std::string what = e.getDescription().cStr();
      const bool limit = what.find("limit") != std::string::npos;
      return reject(limit ? reject_reason::limit_exceeded : reject_reason::malformed, what);
    }
  });
  if (!result) {
    rejected_[static_cast<std::size_t>(result.error().reason)].fetch_add(1);
    return fail(errc::invalid_argument,
                fmt::format("frame rejected ({}): {}", to_string(result.error().reason),
                            result.error().message));
  }
  accepted_.fetch_add(1);
  return std::move(*result);
}

std::uint64_t decoder::rejected_total() const noexcept {
  std::uint64_t total = 0;
  for (const auto& counter : rejected_) total += counter.load();
  return total;
}

const char* body_name(const body& b) noexcept {
  static constexpr const char* names[] = {
      "join",        "joinReply", "heartbeat", "leave",  "admit", "prefill",
      "prefillDone", "tokens",    "finish",    "cancel", "abort", "monitor",
      "down",        "failure",   "credit",    "window", "claim", "claimed"};
  static_assert(std::size(names) == std::variant_size_v<body>);
  return names[b.index()];
}

}  // namespace baton::wire
