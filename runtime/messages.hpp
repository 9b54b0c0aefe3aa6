#pragma once

// The local CAF messages of the actor runtime: what a remote frame looks like to an
// actor on this node, and how the runtime tells it that a remote actor is gone or that a
// frame could not be delivered. Local only: they never cross the network as such.

#include <chrono>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include <caf/allowed_unsafe_message_type.hpp>

#include "base/error.hpp"
#include "schemas/frame.hpp"
#include "transport/types.hpp"

namespace baton::runtime {

/// A checked frame from another node, delivered to the local actor it names. Shared and
/// immutable: reply with node::reply().
struct inbound {
  std::shared_ptr<const wire::frame> frame;
  /// When this node took the frame off the transport (its fabric thread), so an actor can
  /// tell how long the frame waited on this node before it ran.
  std::chrono::steady_clock::time_point received{};
};

/// A remote actor this actor monitors is gone: it terminated, or its node died or left.
struct remote_down {
  wire::actor_address actor;
  error reason;
};

/// A frame this actor sent was not delivered (unknown target, overload, dead node).
struct delivery_failure {
  wire::actor_address target;
  std::uint64_t message_id = 0;
  error reason;
};

/// Bytes of one frame from a peer, handed from the fabric thread to a bridge.
struct raw_frame {
  std::shared_ptr<const std::vector<std::byte>> bytes;
  std::chrono::steady_clock::time_point received{};  ///< off the transport
};

/// What a local actor asks a bridge to send. `sender` gets failures (and, for a request,
/// the reply through `promise` instead).
struct outbound {
  wire::actor_address source;
  wire::actor_address target;
  wire::body body;
  std::uint64_t in_reply_to = 0;
  std::chrono::steady_clock::time_point deadline{};
};

/// A membership change a bridge must act on (its node died or left).
struct node_gone {
  std::string node;
  error reason;
};

/// A local actor asks to be told when the remote actor `target` terminates.
struct watch_remote {
  wire::actor_address target;
  wire::actor_address watcher;
};

/// The outcome of one kv_fabric::write, sent to the actor it names: ok once the bytes
/// landed at the target.
struct rma_done {
  std::uint64_t tag = 0;
  expected<void> status;
};

/// A peer's write with notify landed in this node's memory (sent to the notify sink).
struct rma_notify {
  std::uint64_t data = 0;
  std::string node;  ///< the writer, when the fabric thread knows its name; else empty
};

/// A membership change, sent to the actors that asked node_context::watch_members.
struct member_update {
  wire::member member;
  /// Not a change of `member`: this node itself had been declared dead and refuted it,
  /// so its peers gave up what they held for it (node_context::buried).
  bool buried = false;
};

}  // namespace baton::runtime

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::inbound)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::remote_down)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::delivery_failure)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::raw_frame)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::outbound)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::node_gone)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::watch_remote)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::transport::peer_id)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::rma_done)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::rma_notify)
CAF_ALLOW_UNSAFE_MESSAGE_TYPE(baton::runtime::member_update)
