// transport/types.hpp
#pragma once

#include <array>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"

/// Value types of the transport API: ids, addresses, memory slices, completion events and
/// the named limits every endpoint enforces.
namespace baton::transport {

using clock = std::chrono::steady_clock;
/// Every operation carries an absolute deadline; past it the operation is reported as
/// errc::timed_out even if the provider never completes it.
using deadline = clock::time_point;

/// Identifies a peer within one endpoint (ids are local: A's id for B is not B's id for A).
enum class peer_id : std::uint32_t {};
/// Identifies an endpoint incarnation across the cluster: random, chosen at creation.
enum class node_id : std::uint64_t {};
/// Identifies one queued operation; reported back in its completion event.
enum class op_id : std::uint64_t {};
/// Identifies a memory region allocated (and registered) by one endpoint.
enum class region_id : std::uint32_t {};

/// The id reported when the sender of an event cannot be attributed to a peer.
inline constexpr peer_id unknown_peer{0xffffffffu};

/// Where an endpoint can be reached. tcp: "host:port" (port 0 lets the OS choose when
/// binding); shm: a name ("baton-node-1") or the provider's "fi_shm://..." string;
/// loopback: any name unique within its network.
struct address {
  std::string text;
  friend bool operator==(const address&, const address&) = default;
};

/// A byte range inside a region that this endpoint allocated.
struct local_slice {
  region_id region{};
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

/// A descriptor of remote memory: a range the owner `node` granted to us. It is plain
/// data and may travel inside messages; every RMA checks it against the grants this
/// endpoint actually received from `node` before anything is posted.
struct remote_slice {
  node_id node{};
  std::uint64_t key = 0;  ///< random 64-bit registration key of the owner's region
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
  friend bool operator==(const remote_slice&, const remote_slice&) = default;
};

/// What a completion event reports.
enum class event_kind : std::uint8_t {
  send_done,   ///< a send() finished (the transport took the bytes; only a reply proves receipt)
  write_done,  ///< a write() landed at the target (delivery complete)
  read_done,   ///< a read() landed in the local slice
  message,     ///< a message arrived from `peer`; bytes in `payload`
  notify,      ///< a peer's write with notify landed here; its value in `data`
  timer,       ///< the time given to endpoint::set_timer() has passed
  refused,     ///< a hello was refused (a missing or wrong seal); `status` says whose and why
};

/// One completion. `status` carries the error of a failed or expired operation.
struct event {
  event_kind kind = event_kind::message;
  op_id op{};  ///< for *_done events
  peer_id peer = unknown_peer;
  expected<void> status{};
  std::uint64_t data = 0;          ///< notify value
  std::vector<std::byte> payload;  ///< message bytes
};

/// Named limits; every queue in the transport is bounded by one of these.
struct endpoint_limits {
  std::size_t max_message_bytes = 64 * 1024;  ///< larger sends are refused
  std::size_t max_inflight_ops = 256;         ///< queued + unreported ops; beyond: overloaded
  std::size_t max_expired_ops = 1024;  ///< expired ops the provider still holds; beyond: overloaded
  std::size_t max_peers = 1024;
  std::size_t max_regions = 4096;
  std::size_t max_grants_per_peer = 65536;
  std::size_t max_pending_events = 4096;  ///< unpolled incoming messages; beyond: dropped, counted
  std::size_t receive_depth = 32;         ///< receive buffers posted (fabric)
  /// Registered send buffers (fabric, when local memory must be registered, FI_MR_LOCAL);
  /// a send waits for a free one.
  std::size_t send_depth = 64;
  std::uint64_t max_rma_bytes = std::uint64_t{1} << 30;  ///< one write/read at most
  /// Badly sealed frames from one connection before it is closed (with a frame key).
  std::uint32_t max_bad_tags = 16;
};

/// Counters for operators and tests; monotonically increasing.
struct endpoint_stats {
  std::uint64_t messages_received = 0;
  std::uint64_t bad_frames = 0;      ///< truncated, oversized or malformed, dropped
  std::uint64_t dropped_events = 0;  ///< incoming messages dropped: event queue full
  std::uint64_t descriptors_refused = 0;
  std::uint64_t ops_expired = 0;
  std::uint64_t expired_ops_held = 0;  ///< currently held for the provider (a gauge)
  std::uint64_t progress_wakeups = 0;
  std::uint64_t batches_sent = 0;  ///< provider messages that carried several sends (fabric)
  /// Frames refused because their seal was missing, wrong or replayed (with a frame key).
  std::uint64_t bad_tags = 0;
  /// Connections closed because a peer sent max_bad_tags of those.
  std::uint64_t connections_closed = 0;
};

/// Creation parameters of an endpoint.
struct endpoint_config {
  std::string provider;  ///< "tcp", "shm", "verbs", "efa" or "loopback"
  address bind;          ///< where to listen (see address)
  endpoint_limits limits{};
  std::uint64_t seed = 0;  ///< seeds region keys and node id; 0 draws from the OS
  /// For tests: behave as if the provider required FI_MR_LOCAL (verbs, efa), so tcp and
  /// shm run the path that gives a registered descriptor for every local buffer.
  bool require_local_mr = false;
  /// The cluster's frame key (fabric providers): every frame sent is sealed and every
  /// frame received must be, under its sender's session key (transport/frame_mac.hpp).
  /// Unset: frames are neither sealed nor checked.
  std::optional<std::array<std::byte, 32>> frame_key{};
};

}  // namespace baton::transport
