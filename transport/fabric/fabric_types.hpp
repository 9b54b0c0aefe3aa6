// transport/fabric/fabric_types.hpp: internal records of the fabric endpoint.
#pragma once

#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <rdma/fabric.h>
#include <rdma/fi_domain.h>

#include "transport/fabric/fid.hpp"
#include "transport/types.hpp"

namespace baton::transport::fabric {

struct free_deleter {
  void operator()(std::byte* p) const noexcept { std::free(p); }
};

/// Registered memory. Shared by the region table and every operation that uses it, so the
/// memory outlives any operation the provider still holds. The registration (mr) is
/// declared after the memory and therefore closed before it is freed.
struct region {
  std::unique_ptr<std::byte, free_deleter> memory;
  std::size_t bytes = 0;
  fid_ptr<fid_mr> mr;
  void* desc = nullptr;  // fi_mr_desc: owned by mr
  std::uint64_t key = 0;
  /// Grants handed out on this region, revoked when it is freed.
  std::vector<std::pair<peer_id, local_slice>> granted;
};

struct op;
struct rx_slot;

/// The context libfabric hands back with each completion. `raw` comes first, so the
/// fi_context2* the provider returns converts back to the context (standard layout).
struct context {
  fi_context2 raw{};
  op* as_op = nullptr;
  rx_slot* as_rx = nullptr;
};

enum class op_kind : std::uint8_t { send, write, read, internal };

/// One queued or posted operation. Owned by the progress thread once submitted; stays
/// alive (with its frame bytes and region) until the provider completes it, even after
/// its deadline has been reported.
struct op {
  context ctx;
  op_id id{};
  op_kind kind = op_kind::send;
  peer_id peer = unknown_peer;
  deadline until{};
  fi_addr_t addr = FI_ADDR_UNSPEC;
  std::vector<std::byte> frame;  // send / internal
  std::shared_ptr<region> mem;   // write / read
  std::byte* local = nullptr;
  std::uint64_t length = 0;
  std::uint64_t remote_addr = 0;
  std::uint64_t remote_key = 0;
  std::optional<std::uint64_t> notify;
  /// The registered send buffer holding a copy of `frame` while the provider has it
  /// (FI_MR_LOCAL only); returned when the operation finishes.
  std::optional<std::uint32_t> send_slot;
  /// A batch: the sends its frame carries, which finish when it does (it has no id of its
  /// own and reports nothing itself).
  std::vector<op*> members;
  /// With a frame key: `frame` sealed, as it was last handed to the provider (a send
  /// that must wait is sealed anew when it goes, and may go inside a batch instead).
  std::vector<std::byte> sealed;
  bool plain = false;  ///< never sealed (a refusal: its receiver cannot check our seal)
  bool posted = false;
  bool expired = false;
};

/// One posted receive buffer: a slot of the endpoint's receive slab.
struct rx_slot {
  context ctx;
  std::span<std::byte> buffer;
};

struct peer_entry {
  fi_addr_t addr = FI_ADDR_UNSPEC;
  std::vector<std::byte> raw;
  std::optional<node_id> node;          // learnt from its hello
  std::uint64_t max_message_bytes = 0;  // learnt from its hello; larger sends are refused
  bool hello_sent = false;
  /// An operation to it failed: the process at its address may be a new one by now, which
  /// drops frames from a sender it has no hello from; so our next frame follows a hello.
  bool rehello = false;
  clock::time_point nudged_at{};  // when we last answered its unattributable frame with a hello
  std::optional<error> failure;   // why our hello failed
  /// Our seals and its do not agree (a refuse frame, or its hello's seal): add_peer fails
  /// at once with this (errc::failed) until a hello of its verifies.
  std::optional<error> refused{};
};

/// Raw address bytes as a map key (std::map over vector<std::byte> trips a g++ 12 warning).
inline std::string raw_key(const std::vector<std::byte>& raw) {
  return {reinterpret_cast<const char*>(raw.data()), raw.size()};
}

struct counters {
  std::atomic<std::uint64_t> messages_received{0};
  std::atomic<std::uint64_t> bad_frames{0};
  std::atomic<std::uint64_t> dropped_events{0};
  std::atomic<std::uint64_t> descriptors_refused{0};
  std::atomic<std::uint64_t> ops_expired{0};
  std::atomic<std::uint64_t> expired_ops_held{0};
  std::atomic<std::uint64_t> progress_wakeups{0};
  std::atomic<std::uint64_t> batches_sent{0};
  std::atomic<std::uint64_t> bad_tags{0};
  std::atomic<std::uint64_t> connections_closed{0};
};

}  // namespace baton::transport::fabric
