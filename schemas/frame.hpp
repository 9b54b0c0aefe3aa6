#pragma once

// The root of every node-to-node message (schemas/frame.capnp), in plain C++.

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "schemas/inference.hpp"
#include "schemas/membership.hpp"
#include "schemas/runtime.hpp"

namespace baton::wire {

using body = std::variant<join, join_reply, heartbeat, leave, admit, prefill, prefill_done,
                          token_batch, finish, cancel, abort_attempt, monitor, down, failure,
                          credit, stream_window, claim, claimed>;

/// One message between actors on different nodes.
struct frame {
  actor_address source;
  actor_address target;
  std::uint64_t sender_incarnation = 0;  ///< frames from an old incarnation are dropped
  std::uint64_t message_id = 0;
  std::uint64_t deadline_unix_us = 0;  ///< 0 = no deadline
  std::vector<std::uint8_t> auth_tag;  ///< reserved; empty until authentication lands
  std::uint64_t in_reply_to = 0;       ///< the message_id this frame answers; 0 = none
  wire::body body;
  /// The target node's incarnation the sender knew (0: any). A node drops the frames
  /// addressed to an incarnation older than its process (a restart at the same address
  /// must not run the work sent to the process before it).
  std::uint64_t target_incarnation = 0;
  bool operator==(const frame&) const = default;
};

/// The wire name of the body's type ("prefillDone"), for logs and metrics.
[[nodiscard]] const char* body_name(const body& b) noexcept;

}  // namespace baton::wire
