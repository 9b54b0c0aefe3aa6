#include "transport/frame.hpp"

#include <fmt/format.h>

namespace baton::transport::frame {

namespace {

template <class T>
void put(std::byte* at, T value) {
  for (std::size_t i = 0; i < sizeof(T); ++i)
    at[i] = static_cast<std::byte>((static_cast<std::uint64_t>(value) >> (8 * i)) & 0xff);
}

template <class T>
T get(const std::byte* at) {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i)
    v |= static_cast<std::uint64_t>(std::to_integer<std::uint8_t>(at[i])) << (8 * i);
  return static_cast<T>(v);
}

constexpr std::size_t hello_fixed = 9 + 16;  // max_message_bytes, answer, nonce

expected<void> check_payload(kind type, std::size_t n, std::size_t max_message_bytes) {
  switch (type) {
    case kind::hello:
      if (n <= hello_fixed || n > hello_fixed + 256)
        return fail(errc::invalid_argument, "frame: bad hello size");
      return {};
    case kind::message:
      if (n > max_message_bytes)
        return fail(errc::invalid_argument,
                    fmt::format("frame: message of {} bytes exceeds {}", n, max_message_bytes));
      return {};
    case kind::grant:
      if (n != grant_bytes) return fail(errc::invalid_argument, "frame: bad grant size");
      return {};
    case kind::revoke:
      if (n != revoke_bytes) return fail(errc::invalid_argument, "frame: bad revoke size");
      return {};
    case kind::refuse:
      if (n <= 17 || n > 17 + 256) return fail(errc::invalid_argument, "frame: bad refuse size");
      return {};
    case kind::batch:
      if (n < header_bytes || n > max_message_bytes)
        return fail(errc::invalid_argument, fmt::format("frame: batch of {} bytes", n));
      return {};
  }
  return fail(errc::invalid_argument, "frame: unknown kind");
}

}  // namespace

std::vector<std::byte> encode(kind type, node_id sender, std::span<const std::byte> payload) {
  std::vector<std::byte> out(header_bytes + payload.size());
  put<std::uint32_t>(out.data(), magic);
  put<std::uint8_t>(out.data() + 4, static_cast<std::uint8_t>(type));
  put<std::uint8_t>(out.data() + 5, version);
  put<std::uint64_t>(out.data() + 8, static_cast<std::uint64_t>(sender));
  put<std::uint32_t>(out.data() + 16, static_cast<std::uint32_t>(payload.size()));
  if (!payload.empty()) std::copy(payload.begin(), payload.end(), out.begin() + header_bytes);
  return out;
}

expected<view> decode(std::span<const std::byte> bytes, std::size_t max_message_bytes) {
  if (bytes.size() < header_bytes)
    return fail(errc::invalid_argument,
                fmt::format("frame: {} bytes is shorter than the header", bytes.size()));
  if (get<std::uint32_t>(bytes.data()) != magic)
    return fail(errc::invalid_argument, "frame: bad magic");
  if (get<std::uint8_t>(bytes.data() + 5) != version)
    return fail(errc::invalid_argument, "frame: unsupported version");
  auto raw_kind = get<std::uint8_t>(bytes.data() + 4);
  if (raw_kind < 1 || raw_kind > 6) return fail(errc::invalid_argument, "frame: unknown kind");
  const auto flags = get<std::uint16_t>(bytes.data() + 6);
  if (flags != 0 && flags != flag_sealed)
    return fail(errc::invalid_argument, fmt::format("frame: unknown flags {:#x}", flags));
  const std::size_t trailer = flags == flag_sealed ? seal_bytes : 0;
  auto length = get<std::uint32_t>(bytes.data() + 16);
  if (bytes.size() < header_bytes + trailer || length != bytes.size() - header_bytes - trailer)
    return fail(errc::invalid_argument,
                fmt::format("frame: length field {} but {} bytes after the header{}", length,
                            bytes.size() - header_bytes, trailer != 0 ? " and seal" : ""));
  view v{static_cast<kind>(raw_kind), static_cast<node_id>(get<std::uint64_t>(bytes.data() + 8)),
         bytes.subspan(header_bytes, length), std::nullopt};
  if (trailer != 0) {
    const std::size_t covered = bytes.size() - tag_bytes;
    v.seal = seal_view{get<std::uint64_t>(bytes.data() + covered - sequence_bytes),
                       bytes.first(covered), bytes.subspan(covered)};
  }
  if (auto ok = check_payload(v.type, v.payload.size(), max_message_bytes); !ok)
    return tl::unexpected(ok.error());
  return v;
}

expected<std::vector<view>> split_batch(std::span<const std::byte> payload, node_id sender,
                                        std::size_t max_message_bytes) {
  std::vector<view> out;
  while (!payload.empty()) {
    if (payload.size() < header_bytes)
      return fail(errc::invalid_argument, "frame: batch ends inside a header");
    const std::size_t length = header_bytes + get<std::uint32_t>(payload.data() + 16);
    if (length > payload.size())
      return fail(errc::invalid_argument, "frame: batch ends inside a message");
    auto inner = decode(payload.first(length), max_message_bytes);
    if (!inner) return tl::unexpected(inner.error());
    if (inner->type != kind::message || inner->sender != sender || inner->seal)
      return fail(errc::invalid_argument,
                  "frame: a batch holds only its sender's unsealed messages");
    out.push_back(*inner);
    payload = payload.subspan(length);
  }
  if (out.empty()) return fail(errc::invalid_argument, "frame: empty batch");
  return out;
}

std::vector<std::byte> encode_hello(const hello_payload& hello) {
  std::vector<std::byte> out(hello_fixed + hello.raw_address.size());
  put<std::uint64_t>(out.data(), hello.max_message_bytes);
  out[8] = std::byte{hello.answer ? std::uint8_t{1} : std::uint8_t{0}};
  std::copy(hello.nonce.begin(), hello.nonce.end(), out.begin() + 9);
  std::copy(hello.raw_address.begin(), hello.raw_address.end(), out.begin() + hello_fixed);
  return out;
}

hello_payload decode_hello(std::span<const std::byte> payload) {
  hello_payload out;
  out.max_message_bytes = get<std::uint64_t>(payload.data());
  out.answer = payload[8] != std::byte{0};
  std::copy(payload.begin() + 9, payload.begin() + hello_fixed, out.nonce.begin());
  out.raw_address.assign(payload.begin() + hello_fixed, payload.end());
  return out;
}

std::vector<std::byte> encode_refuse(const refuse_payload& refuse) {
  std::vector<std::byte> out(17 + refuse.raw_address.size());
  out[0] = static_cast<std::byte>(refuse.reason);
  std::copy(refuse.nonce.begin(), refuse.nonce.end(), out.begin() + 1);
  std::copy(refuse.raw_address.begin(), refuse.raw_address.end(), out.begin() + 17);
  return out;
}

std::optional<refuse_payload> decode_refuse(std::span<const std::byte> payload) {
  const auto reason = static_cast<refusal>(payload[0]);
  if (reason != refusal::unsealed && reason != refusal::bad_seal) return std::nullopt;
  refuse_payload out;
  out.reason = reason;
  std::copy(payload.begin() + 1, payload.begin() + 17, out.nonce.begin());
  out.raw_address.assign(payload.begin() + 17, payload.end());
  return out;
}

void mark_sealed(std::span<std::byte> frame, std::uint64_t sequence) {
  put<std::uint16_t>(frame.data() + 6, flag_sealed);
  put<std::uint64_t>(frame.data() + frame.size() - sequence_bytes, sequence);
}

std::vector<std::byte> encode_grant(const received_grant& grant) {
  std::vector<std::byte> out(grant_bytes);
  put<std::uint64_t>(out.data(), grant.key);
  put<std::uint64_t>(out.data() + 8, grant.base);
  put<std::uint64_t>(out.data() + 16, grant.offset);
  put<std::uint64_t>(out.data() + 24, grant.length);
  return out;
}

received_grant decode_grant(std::span<const std::byte> payload) {
  return {get<std::uint64_t>(payload.data()), get<std::uint64_t>(payload.data() + 8),
          get<std::uint64_t>(payload.data() + 16), get<std::uint64_t>(payload.data() + 24)};
}

std::vector<std::byte> encode_revoke(const revoke_range& range) {
  std::vector<std::byte> out(revoke_bytes);
  put<std::uint64_t>(out.data(), range.key);
  put<std::uint64_t>(out.data() + 8, range.offset);
  put<std::uint64_t>(out.data() + 16, range.length);
  return out;
}

revoke_range decode_revoke(std::span<const std::byte> payload) {
  return {get<std::uint64_t>(payload.data()), get<std::uint64_t>(payload.data() + 8),
          get<std::uint64_t>(payload.data() + 16)};
}

}  // namespace baton::transport::frame
