// transport/endpoint.hpp
#pragma once

#include <chrono>
#include <cstddef>
#include <functional>
#include <memory>
#include <optional>
#include <span>

#include "base/error.hpp"
#include "transport/types.hpp"

namespace baton::transport {

/// A reliable message endpoint with one-sided RMA, modelled on libfabric's FI_EP_RDM.
///
/// Threading: not thread-safe, except send() and interrupt(), which may be called from any
/// thread (the submission path: senders post without going through the owner). Every
/// other call comes from the one thread that owns the endpoint. Implementations may run
/// their own progress thread internally (fabric does); they call back into user code from
/// it only through an event handler the owner installed (set_event_handler).
///
/// Buffers: send() copies its bytes before returning. RMA reads and writes only touch
/// regions this endpoint allocated; the transport keeps a region's memory alive while any
/// operation on it is held by the provider, even after free_region() or an expired
/// deadline, so no user buffer is ever written after its operation was reported.
///
/// Ordering: messages from one endpoint to one peer are delivered in the order sent.
/// Nothing is promised between different peers, or between messages and RMA: a write
/// with notify is the way to learn that written data has landed.
///
/// Limits: at most limits().max_inflight_ops operations may be queued or unreported;
/// beyond that send/write/read fail with errc::overloaded.
class endpoint {
 public:
  virtual ~endpoint() = default;

  /// The address peers use to reach this endpoint (tcp: the bound "ip:port").
  [[nodiscard]] virtual address local_address() const = 0;

  /// This endpoint's cluster-wide id; descriptors of its memory name it.
  [[nodiscard]] virtual node_id local_node() const = 0;

  [[nodiscard]] virtual const endpoint_limits& limits() const = 0;

  /// Makes `peer` reachable and establishes the connection before returning, so no
  /// request pays for connection set-up. Blocks until then or `until`. Adding the same
  /// address twice yields the same id. A peer that reaches us first is added implicitly
  /// and shows up as the `peer` of its messages. Fails with `invalid_argument` (an
  /// address that cannot be resolved), `overloaded` (max_peers reached), `failed` only
  /// when the peer refused us (it holds another cluster secret: no retry can succeed),
  /// and otherwise `disconnected` or `timed_out` (gone, restarting, cut off: try again).
  [[nodiscard]] virtual expected<peer_id> add_peer(const address& peer, deadline until) = 0;

  /// Drops the connection to the peer at `peer` (its operations in flight fail), whether it
  /// is established or still being made; the next operation opens a new one under the
  /// same id. For a peer that was cut off: over TCP, an old connection's retransmissions
  /// (or a connect's SYNs) back off exponentially while the network is down, and may wait
  /// seconds after it returns. No effect for an address never added, or where there is no
  /// connection to drop.
  virtual void reset_peer(const address& /*peer*/) {}

  /// Allocates and registers `bytes` of memory under a fresh random 64-bit key.
  [[nodiscard]] virtual expected<region_id> allocate_region(std::size_t bytes) = 0;

  /// The memory of a region; valid until free_region(). Empty for an unknown id.
  [[nodiscard]] virtual std::span<std::byte> region_bytes(region_id region) = 0;

  /// Frees a region and revokes every grant on it. Memory still held by the provider
  /// for an expired operation is released later, when the provider lets it go.
  [[nodiscard]] virtual expected<void> free_region(region_id region) = 0;

  /// Lets `peer` read and write `slice`; returns the descriptor to hand to it (in a
  /// message). The grant reaches the peer before any later message to it.
  [[nodiscard]] virtual expected<remote_slice> grant(peer_id peer, const local_slice& slice) = 0;

  /// Queues a message of at most limits().max_message_bytes bytes. May be called from any
  /// thread, concurrently with the owner; messages one thread sends to one peer keep
  /// their order.
  [[nodiscard]] virtual expected<op_id> send(peer_id to, std::span<const std::byte> bytes,
                                             deadline until) = 0;

  /// Queues a one-sided copy of `source` into `target`; with `notify`, the target gets a
  /// notify event carrying that value once the data has landed. `target` is checked
  /// against the grants received from its node before anything is posted: outside them
  /// the call fails with errc::invalid_argument.
  [[nodiscard]] virtual expected<op_id> write(const local_slice& source, const remote_slice& target,
                                              deadline until,
                                              std::optional<std::uint64_t> notify) = 0;

  /// Queues a one-sided copy of `source` into the local slice `target`; checked like write.
  [[nodiscard]] virtual expected<op_id> read(const local_slice& target, const remote_slice& source,
                                             deadline until) = 0;

  /// Moves up to out.size() completions into `out`; never blocks.
  [[nodiscard]] virtual std::size_t poll(std::span<event> out) = 0;

  /// Blocks until poll() would return something, `timeout` passed or interrupt() was
  /// called; true if events wait.
  [[nodiscard]] virtual bool wait(std::chrono::milliseconds timeout) = 0;

  /// Makes the current (or else the next) wait() return at once. The one method that
  /// may be called from any thread, so the owner thread can be woken for other work.
  virtual void interrupt() = 0;

  [[nodiscard]] virtual endpoint_stats stats() const = 0;

  /// Stops the transport's own thread, if it has one: once this returns, nothing runs in
  /// the provider on this endpoint's behalf, and nothing but destruction may follow.
  /// Destruction does it too; a process holding several endpoints (a test) stops them all
  /// before destroying any, since shm peers in one process read each other's memory.
  virtual void stop() {}

  /// The delivery path without the owner thread: from now on every event is first offered
  /// to `handler`, on the transport's progress thread, as soon as it happens; an event
  /// the handler takes (returns true for) is not queued for poll() (a *_done event it
  /// takes no longer counts as in flight). The handler must be quick and must not call
  /// the endpoint except send() and interrupt(). An empty handler removes it; once this
  /// returns, the old handler is not running and will not run again. Returns false, and
  /// changes nothing, if the transport has no thread of its own (loopback delivers
  /// inside poll() and wait()): the owner polls as before.
  [[nodiscard]] virtual bool set_event_handler(std::function<bool(event&)> handler) {
    (void)handler;
    return false;
  }

  /// With an event handler set: offers it one `timer` event, on the progress thread, once
  /// `at` has passed (a later call replaces the time; clock::time_point::max() cancels).
  /// The handler's owner then keeps time on the thread that wakes for its frames anyway,
  /// not on a thread of its own: a timer moved later costs no wake-up. May be called
  /// from any thread, the handler included. Returns false, and changes nothing, where
  /// set_event_handler() does.
  [[nodiscard]] virtual bool set_timer(deadline at) {
    (void)at;
    return false;
  }
};

namespace loopback {
class network;
}

/// Creates an endpoint for `config.provider`: "tcp" (tcp;ofi_rxm), "shm", "verbs", "efa"
/// (errc::not_found when no such device exists here) or "loopback", which needs `network`
/// (the in-process network it joins; shared ownership).
[[nodiscard]] expected<std::unique_ptr<endpoint>> make_endpoint(
    const endpoint_config& config, std::shared_ptr<loopback::network> network = nullptr);

}  // namespace baton::transport
