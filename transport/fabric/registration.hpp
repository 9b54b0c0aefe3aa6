// transport/fabric/registration.hpp: memory registration for regions and for the
// endpoint's own frame buffers. Internal to transport/fabric/.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include <rdma/fi_domain.h>

#include "base/error.hpp"
#include "transport/fabric/fabric_types.hpp"
#include "transport/fabric/fid.hpp"

namespace baton::transport::fabric {

/// Draws a requested key for a registration the provider does not key itself (no
/// FI_MR_PROV_KEY); keys must be unique in the domain, so a collision draws again.
using key_source = std::function<std::uint64_t()>;

/// Registers `bytes` at `memory` for `access`. With a non-null `bind_to` (FI_MR_ENDPOINT)
/// the registration is bound to that endpoint and enabled. Call on the thread that owns
/// the domain; the memory must outlive the registration.
[[nodiscard]] expected<fid_ptr<fid_mr>> register_memory(fid_domain& domain, fid_ep* bind_to,
                                                        void* memory, std::size_t bytes,
                                                        std::uint64_t access,
                                                        const key_source& next_key);

/// One allocation cut into equal slots, registered once when the provider requires a
/// descriptor for local buffers (FI_MR_LOCAL), so frames are sent and received without a
/// registration per message. Slots start 64-byte aligned (Cap'n Proto needs 8). Not
/// thread-safe: after set-up only the progress thread uses it.
class slab {
 public:
  slab() = default;  ///< no slots

  /// `slots` slots of at least `slot_bytes`; registered for `access` unless `domain` is
  /// null (then desc() is null, which providers without FI_MR_LOCAL accept).
  [[nodiscard]] static expected<slab> make(std::size_t slots, std::size_t slot_bytes,
                                           fid_domain* domain, fid_ep* bind_to,
                                           std::uint64_t access, const key_source& next_key);

  [[nodiscard]] std::size_t slots() const { return slots_; }
  [[nodiscard]] std::size_t slot_bytes() const { return slot_bytes_; }
  [[nodiscard]] std::span<std::byte> slot(std::uint32_t index) const;
  /// fi_mr_desc of the registration, or null when unregistered. Owned by the slab.
  [[nodiscard]] void* desc() const { return desc_; }

  /// Takes a free slot; nullopt while every slot is taken.
  [[nodiscard]] std::optional<std::uint32_t> acquire();
  /// Returns a slot taken by acquire() (once the provider has let go of it).
  void release(std::uint32_t index);

 private:
  std::unique_ptr<std::byte, free_deleter> memory_;
  std::size_t slots_ = 0;
  std::size_t slot_bytes_ = 0;
  std::size_t stride_ = 0;
  fid_ptr<fid_mr> mr_;  // declared after memory_: closed before it is freed
  void* desc_ = nullptr;
  std::vector<std::uint32_t> free_;
};

}  // namespace baton::transport::fabric
