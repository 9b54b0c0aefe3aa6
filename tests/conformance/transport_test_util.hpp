// Helpers shared by the transport conformance tests and their peer process.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstring>
#include <functional>
#include <optional>
#include <random>
#include <span>
#include <string>
#include <vector>

#include "transport/endpoint.hpp"

namespace baton::transport::testing {

// What the conformance suites run against: a provider, and whether the endpoints behave
// as if it required FI_MR_LOCAL (as verbs and efa do), so that every frame and RMA buffer
// goes with a registered descriptor.
struct loopback_kind {
  static constexpr const char* provider = "loopback";
  static constexpr const char* name = "loopback";
  static constexpr bool local_mr = false;
};
struct tcp_kind {
  static constexpr const char* provider = "tcp";
  static constexpr const char* name = "tcp";
  static constexpr bool local_mr = false;
};
struct shm_kind {
  static constexpr const char* provider = "shm";
  static constexpr const char* name = "shm";
  static constexpr bool local_mr = false;
};
struct tcp_local_mr_kind {
  static constexpr const char* provider = "tcp";
  static constexpr const char* name = "tcp_local_mr";
  static constexpr bool local_mr = true;
};
struct shm_local_mr_kind {
  static constexpr const char* provider = "shm";
  static constexpr const char* name = "shm_local_mr";
  static constexpr bool local_mr = true;
};

/// Deterministic content: byte i of a buffer filled with `seed`.
inline std::byte pattern_byte(std::uint64_t seed, std::uint64_t i) {
  return static_cast<std::byte>((i * 131 + seed * 7 + (i >> 12)) & 0xff);
}

inline void fill(std::span<std::byte> bytes, std::uint64_t seed) {
  for (std::size_t i = 0; i < bytes.size(); ++i) bytes[i] = pattern_byte(seed, i);
}

/// FNV-1a over the bytes.
inline std::uint64_t digest(std::span<const std::byte> bytes) {
  std::uint64_t h = 1469598103934665603ull;
  for (auto b : bytes) {
    h ^= std::to_integer<std::uint8_t>(b);
    h *= 1099511628211ull;
  }
  return h;
}

/// Polls `ep` until `accept` takes an event or `timeout` passes; other events are kept in
/// `stash` for later calls. Returns the accepted event.
inline std::optional<event> await_event(endpoint& ep,
                                        const std::function<bool(const event&)>& accept,
                                        std::chrono::milliseconds timeout,
                                        std::vector<event>* stash = nullptr) {
  const auto until = clock::now() + timeout;
  if (stash != nullptr) {
    for (auto it = stash->begin(); it != stash->end(); ++it) {
      if (accept(*it)) {
        event ev = std::move(*it);
        stash->erase(it);
        return ev;
      }
    }
  }
  std::vector<event> batch(16);
  while (clock::now() < until) {
    (void)ep.wait(std::chrono::milliseconds(20));
    auto n = ep.poll(batch);
    std::optional<event> found;
    for (std::size_t i = 0; i < n; ++i) {
      if (!found && accept(batch[i])) {
        found = std::move(batch[i]);
      } else if (stash != nullptr) {
        stash->push_back(std::move(batch[i]));
      }
    }
    if (found) return found;
  }
  return std::nullopt;
}

/// Little helpers to put u64s into messages.
inline std::vector<std::byte> pack(std::initializer_list<std::uint64_t> values) {
  std::vector<std::byte> out(values.size() * 8);
  std::size_t at = 0;
  for (auto v : values) {
    std::memcpy(out.data() + at, &v, 8);
    at += 8;
  }
  return out;
}

inline std::uint64_t unpack(std::span<const std::byte> bytes, std::size_t index) {
  std::uint64_t v = 0;
  if (bytes.size() >= (index + 1) * 8) std::memcpy(&v, bytes.data() + index * 8, 8);
  return v;
}

/// A unique shm endpoint name: pid, a per-process random tag (pids get reused on a busy
/// machine) and a counter.
inline std::string shm_name(const std::string& role) {
  static int counter = 0;
  static const auto tag = std::random_device{}() & 0xffffff;
  return "baton-t" + std::to_string(::getpid()) + "-" + std::to_string(tag) + "-" + role +
         std::to_string(counter++);
}

}  // namespace baton::transport::testing
