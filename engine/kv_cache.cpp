#include "engine/kv_cache.hpp"

#include <algorithm>

#include "base/check.hpp"

namespace baton::engine {

kv_pool::kv_pool(const kv_layout& layout, std::size_t n_blocks)
    : layout_(layout),
      n_blocks_(n_blocks),
      memory_(layout.block_floats() * n_blocks, 0.0f),
      in_use_(n_blocks, false) {
  BATON_CHECK(n_blocks > 0 && layout.block_floats() > 0, "empty kv pool");
  BATON_CHECK(n_blocks <= UINT32_MAX, "too many kv blocks");
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
  in_use_[static_cast<std::size_t>(block)] = true;
  // Zeroed, so a partly filled block's bytes (and checksum) depend only on its tokens.
  const std::size_t floats = layout_.block_floats();
  std::fill_n(
      memory_.begin() + static_cast<std::ptrdiff_t>(static_cast<std::size_t>(block) * floats),
      floats, 0.0f);
  return block;
}

void kv_pool::release(block_id block) {
  const auto index = static_cast<std::size_t>(block);
  BATON_CHECK(index < n_blocks_ && in_use_[index], "releasing a block that is not allocated");
  in_use_[index] = false;
  free_.push_back(block);
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

std::span<std::byte> kv_pool::bytes() {
  return std::as_writable_bytes(std::span<float>(memory_));
}

}  // namespace baton::engine
