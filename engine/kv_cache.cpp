#include "engine/kv_cache.hpp"

#include <algorithm>
#include <cstdint>

#include "base/check.hpp"

namespace baton::engine {

kv_pool::kv_pool(const kv_layout& layout, std::size_t n_blocks)
    : layout_(layout),
      n_blocks_(n_blocks),
      owned_(layout.block_floats() * n_blocks, 0.0f),
      memory_(owned_),
      holders_(n_blocks, 0) {
  BATON_CHECK(n_blocks > 0 && layout.block_floats() > 0, "empty kv pool");
  BATON_CHECK(n_blocks <= UINT32_MAX, "too many kv blocks");
  free_.reserve(n_blocks);
  for (std::size_t i = n_blocks; i > 0; --i) free_.push_back(static_cast<block_id>(i - 1));
}

kv_pool::kv_pool(const kv_layout& layout, std::size_t n_blocks, std::span<std::byte> memory)
    : layout_(layout), n_blocks_(n_blocks), holders_(n_blocks, 0) {
  BATON_CHECK(n_blocks > 0 && layout.block_floats() > 0, "empty kv pool");
  BATON_CHECK(n_blocks <= UINT32_MAX, "too many kv blocks");
  BATON_CHECK(memory.size() / layout.block_bytes() >= n_blocks,
              "kv pool memory too small for its blocks");
  BATON_CHECK(reinterpret_cast<std::uintptr_t>(memory.data()) % alignof(float) == 0,
              "kv pool memory not aligned for float");
  // The bytes are suitably aligned, and floats are implicit-lifetime types.
  memory_ = {reinterpret_cast<float*>(memory.data()), n_blocks * layout.block_floats()};
  free_.reserve(n_blocks);
  for (std::size_t i = n_blocks; i > 0; --i) free_.push_back(static_cast<block_id>(i - 1));
}

expected<block_id> kv_pool::allocate() {
  if (free_.empty()) {
    return fail(errc::overloaded,
                "kv pool: all " + std::to_string(n_blocks_) + " blocks are in use");
  }
  const block_id block = free_.back();
  free_.pop_back();
  holders_[static_cast<std::size_t>(block)] = 1;
  // Zeroed, so a partly filled block's bytes (and checksum) depend only on its tokens.
  const std::size_t floats = layout_.block_floats();
  std::fill_n(
      memory_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(block) * floats),
      floats, 0.0f);
  return block;
}

void kv_pool::share(block_id block) {
  const auto index = static_cast<std::size_t>(block);
  BATON_CHECK(index < n_blocks_ && holders_[index] > 0, "sharing a block that is not allocated");
  ++holders_[index];
}

void kv_pool::release(block_id block) {
  const auto index = static_cast<std::size_t>(block);
  BATON_CHECK(index < n_blocks_ && holders_[index] > 0, "releasing a block that is not allocated");
  if (--holders_[index] == 0) free_.push_back(block);
}

expected<std::vector<block_id>> kv_pool::fork(std::span<const block_id> blocks,
                                              std::size_t length) {
  const std::size_t full = length / layout_.block_tokens;
  BATON_CHECK(full <= blocks.size(), "a fork of more positions than the blocks hold");
  std::vector<block_id> out(blocks.begin(), blocks.begin() + static_cast<std::ptrdiff_t>(full));
  if (full < blocks.size() && length % layout_.block_tokens != 0) {
    auto tail = allocate();
    if (!tail) return tl::unexpected(tail.error());
    const std::size_t floats = layout_.block_floats();
    std::copy_n(
        memory_.begin() +
            static_cast<std::ptrdiff_t>(static_cast<std::size_t>(blocks[full]) * floats),
        floats,
        memory_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(*tail) * floats));
    out.push_back(*tail);
  }
  for (std::size_t i = 0; i < full; ++i) share(out[i]);
  return out;
}

std::span<float> kv_pool::slice(block_id block, std::size_t layer) {
  const auto index = static_cast<std::size_t>(block);
  BATON_CHECK(index < n_blocks_ && layer < layout_.n_layers, "kv slice out of range");
  return {memory_.data() + index * layout_.block_floats() + layer * layout_.slice_floats(),
          layout_.slice_floats()};
}

std::span<const float> kv_pool::slice(block_id block, std::size_t layer) const {
  const auto index = static_cast<std::size_t>(block);
  BATON_CHECK(index < n_blocks_ && layer < layout_.n_layers, "kv slice out of range");
  return {memory_.data() + index * layout_.block_floats() + layer * layout_.slice_floats(),
          layout_.slice_floats()};
}

std::size_t kv_pool::byte_offset(block_id block, std::size_t layer) const {
  const auto index = static_cast<std::size_t>(block);
  BATON_CHECK(index < n_blocks_ && layer < layout_.n_layers, "kv slice out of range");
  return index * layout_.block_bytes() + layer * layout_.slice_bytes();
}

std::span<std::byte> kv_pool::bytes() {
  return std::as_writable_bytes(memory_);
}

std::span<const std::byte> kv_pool::bytes() const {
  return std::as_bytes(std::span<const float>(memory_));
}

}  // namespace baton::engine
