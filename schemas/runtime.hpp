#pragma once

// The actor runtime's own messages (schemas/runtime.capnp) in plain C++.

#include <cstdint>
#include <string>

#include "base/error.hpp"
#include "schemas/types.hpp"

namespace baton::wire {

/// Asks the target's node to report when the target actor terminates.
struct monitor {
  actor_address watcher;
  bool operator==(const monitor&) const = default;
};

/// The actor `actor` is gone.
struct down {
  actor_address actor;
  errc code = errc::disconnected;
  std::string reason;
  bool operator==(const down&) const = default;
};

/// The frame named by in_reply_to could not be delivered or answered.
struct failure {
  errc code = errc::failed;
  std::string message;
  bool operator==(const failure&) const = default;
};

/// The receiver delivered `frames` more frames from this sender; that many may follow.
struct credit {
  std::uint32_t frames = 0;
  bool operator==(const credit&) const = default;
};

}  // namespace baton::wire
