#pragma once

// What the serving state classes (router, prefill, decode) hand back from every event:
// the messages to send and the timers to set. The state classes never send, sleep or read
// a clock themselves; the CAF actors around them (and the tests and simulators) do.

#include <chrono>
#include <cstdint>
#include <vector>

#include "schemas/frame.hpp"

namespace baton::actors {

using clock = std::chrono::steady_clock;
using time_point = clock::time_point;

/// Names the serving actors are published under on every node.
inline constexpr const char* router_name = "router";
inline constexpr const char* prefill_name = "prefill";
inline constexpr const char* decode_name = "decode";

/// A message for another actor, usually on another node.
struct outgoing {
  wire::actor_address to;
  wire::body body;
};

/// Call back on_timer(id) at `at`. Timers are never cancelled: a state class ignores an
/// id it no longer knows.
struct timer {
  std::uint64_t id = 0;
  time_point at{};
};

/// Dropping a state class's effects loses messages and timers: it never compiles.
struct [[nodiscard]] effects {
  std::vector<outgoing> sends;
  std::vector<timer> timers;

  void send(wire::actor_address to, wire::body body) {
    sends.push_back({std::move(to), std::move(body)});
  }
  void append(effects&& other) {
    for (auto& s : other.sends) sends.push_back(std::move(s));
    for (auto& t : other.timers) timers.push_back(t);
  }
};

/// The notify value a prefill attaches to each slice write and the decode node counts:
/// the request id's low 48 bits and the attempt's low 16.
[[nodiscard]] inline std::uint64_t slice_notify_value(wire::request_id request,
                                                      std::uint32_t attempt) {
  return (static_cast<std::uint64_t>(request) << 16) | (attempt & 0xffffu);
}

}  // namespace baton::actors
