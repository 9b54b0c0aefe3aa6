#pragma once

// One-sided RMA for actors: what a prefill actor needs to write KV slices into a decode
// node's pool, and what the decode actor needs to hand out descriptors and learn that the
// data landed. Implemented by the fabric thread (runtime/fabric_io.hpp); reached through
// node_context::rma().

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

#include <caf/actor.hpp>

#include "base/error.hpp"
#include "transport/types.hpp"

namespace baton::runtime {

/// Thread-safe: any actor (or other) thread may call. The blocking calls wait for the
/// fabric thread, which never waits for an actor, so they cannot deadlock with it; they
/// take at most milliseconds unless they wait for a connection (grant).
///
/// Nodes are named as in the topology and must be attached: a bridge to them exists
/// (node_context::bridge() makes one), so the connection is up or being set up.
class kv_fabric {
 public:
  virtual ~kv_fabric() = default;

  /// Registered memory owned by the transport. The region's 64-bit key is not exposed
  /// here: the endpoint reveals it only in the descriptor grant() returns.
  struct region {
    transport::region_id id{};
    std::span<std::byte> bytes;  ///< valid until free_region(id)
  };

  /// The transport's id of this node: what descriptors of its memory name.
  [[nodiscard]] virtual transport::node_id local_node() const = 0;

  /// Allocates and registers `bytes` (page-aligned, zero-initialised not promised).
  /// Blocks until done. Errors: invalid_argument (zero), overloaded (limits, memory).
  [[nodiscard]] virtual expected<region> allocate_region(std::size_t bytes) = 0;

  /// Frees a region and revokes its grants. Blocks until done; not_found for an unknown id.
  [[nodiscard]] virtual expected<void> free_region(transport::region_id id) = 0;

  /// Lets `node` write and read `slice`; returns the descriptor to send it. The grant
  /// reaches `node` before any frame posted to it after this returns, so a descriptor sent
  /// in a later message is always usable on arrival. Waits for a connection in progress
  /// until `until` (timed_out); not_found when `node` is not attached; the endpoint's
  /// error (invalid_argument, not_found) for a bad slice.
  [[nodiscard]] virtual expected<transport::remote_slice> grant(const std::string& node,
                                                                const transport::local_slice& slice,
                                                                transport::deadline until) = 0;

  /// Queues a write of `source` (a slice of a region of this node) into `target` (a
  /// descriptor `node` granted us); never blocks. Exactly one rma_done{tag, status} goes
  /// to `reply_to` (if valid): ok once the bytes landed at the target, else why not:
  /// not_found (node not attached), invalid_argument (target outside the grants received
  /// from its node, or bad lengths), timed_out (`until` passed), overloaded (too many
  /// writes waiting), disconnected (node detached while the write waited). With
  /// `notify`, the target node's notify sink gets rma_notify{value} after the data landed.
  /// Writes wait for a connection in progress and for the endpoint's in-flight limit.
  virtual void write(const std::string& node, const transport::local_slice& source,
                     const transport::remote_slice& target, std::optional<std::uint64_t> notify,
                     transport::deadline until, caf::actor reply_to, std::uint64_t tag) = 0;

  /// Where rma_notify messages for writes into this node go (one sink per node; an invalid
  /// handle drops them).
  virtual void set_notify_sink(caf::actor sink) = 0;
};

}  // namespace baton::runtime
