// Memory registration for regions and for the endpoint's own frame buffers.
#include "transport/fabric/registration.hpp"

#include <cstdlib>

#include <fmt/format.h>
#include <rdma/fi_endpoint.h>
#include <rdma/fi_errno.h>

#include "base/check.hpp"

namespace baton::transport::fabric {

expected<fid_ptr<fid_mr>> register_memory(fid_domain& domain, fid_ep* bind_to, void* memory,
                                          std::size_t bytes, std::uint64_t access,
                                          const key_source& next_key) {
  constexpr int key_attempts = 8;
  int rc = -FI_ENOKEY;
  fid_mr* raw = nullptr;
  for (int attempt = 0; attempt < key_attempts && rc == -FI_ENOKEY; ++attempt)
    rc = fi_mr_reg(&domain, memory, bytes, access, 0, next_key(), 0, &raw, nullptr);
  if (rc != 0) return fail(errc::failed, fmt::format("fi_mr_reg: {}", fi_strerror(-rc)));
  fid_ptr<fid_mr> mr(raw);
  if (bind_to != nullptr) {
    rc = fi_mr_bind(raw, &bind_to->fid, 0);
    if (rc == 0) rc = fi_mr_enable(raw);
    if (rc != 0) return fail(errc::failed, fmt::format("fi_mr_bind/enable: {}", fi_strerror(-rc)));
  }
  return mr;
}

expected<slab> slab::make(std::size_t slots, std::size_t slot_bytes, fid_domain* domain,
                          fid_ep* bind_to, std::uint64_t access, const key_source& next_key) {
  BATON_CHECK(slots > 0 && slots <= UINT32_MAX && slot_bytes > 0, "slab: bad shape");
  constexpr std::size_t slot_align = 64;
  constexpr std::size_t page = 4096;
  slab out;
  out.slots_ = slots;
  out.slot_bytes_ = slot_bytes;
  out.stride_ = (slot_bytes + slot_align - 1) / slot_align * slot_align;
  const std::size_t total = (out.stride_ * slots + page - 1) / page * page;
  out.memory_.reset(static_cast<std::byte*>(std::aligned_alloc(page, total)));
  if (!out.memory_) return fail(errc::overloaded, "slab: out of memory");
  if (domain != nullptr) {
    auto mr = register_memory(*domain, bind_to, out.memory_.get(), total, access, next_key);
    if (!mr) return tl::unexpected(mr.error());
    out.mr_ = std::move(*mr);
    out.desc_ = fi_mr_desc(out.mr_.get());
  }
  out.free_.reserve(slots);
  for (std::size_t i = slots; i > 0; --i) out.free_.push_back(static_cast<std::uint32_t>(i - 1));
  return out;
}

std::span<std::byte> slab::slot(std::uint32_t index) const {
  BATON_CHECK(index < slots_, "slab: slot out of range");
  return {memory_.get() + index * stride_, slot_bytes_};
}

std::optional<std::uint32_t> slab::acquire() {
  if (free_.empty()) return std::nullopt;
  const auto index = free_.back();
  free_.pop_back();
  return index;
}

void slab::release(std::uint32_t index) {
  BATON_CHECK(index < slots_ && free_.size() < slots_, "slab: release of a slot not taken");
  free_.push_back(index);
}

}  // namespace baton::transport::fabric
