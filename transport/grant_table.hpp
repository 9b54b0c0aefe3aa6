// transport/grant_table.hpp
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <vector>

#include "base/error.hpp"
#include "transport/types.hpp"

namespace baton::transport {

/// One range of a peer's memory that the peer allowed us to access. `base` is what the
/// provider needs added to an offset (the region's virtual address in FI_MR_VIRT_ADDR
/// mode, 0 in offset mode).
struct received_grant {
  std::uint64_t key = 0;
  std::uint64_t base = 0;
  std::uint64_t offset = 0;
  std::uint64_t length = 0;
};

/// The grants this endpoint received, per granting node. Every RMA descriptor is checked
/// here before anything is posted, because providers cannot be trusted to (tcp drops the
/// whole connection on a bad write; shm accepts a wrong key silently). Not thread-safe.
class grant_table {
 public:
  explicit grant_table(std::size_t max_grants_per_node) : max_per_node_(max_grants_per_node) {}

  /// Records a grant from `from`; errc::overloaded beyond the per-node limit,
  /// errc::invalid_argument for an empty or wrapping range.
  [[nodiscard]] expected<void> add(node_id from, const received_grant& grant);

  /// Drops every grant of `from` under `key` that overlaps [offset, offset+length).
  void revoke(node_id from, std::uint64_t key, std::uint64_t offset, std::uint64_t length);

  /// Drops every grant of `from` (the node restarted or died).
  void forget(node_id from);

  /// The grant containing `slice` entirely, or errc::invalid_argument saying why not.
  [[nodiscard]] expected<received_grant> check(const remote_slice& slice) const;

  [[nodiscard]] std::size_t size() const noexcept;

 private:
  std::size_t max_per_node_;
  std::map<node_id, std::vector<received_grant>> grants_;
};

}  // namespace baton::transport
