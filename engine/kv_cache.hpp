#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.hpp"

namespace baton::engine {

/// Index of a block in a kv_pool.
enum class block_id : std::uint32_t {};

/// The shape of a paged KV cache. A block holds `block_tokens` positions of every layer,
/// laid out block -> layer -> {keys, values}, each [kv_heads][block_tokens][head_size], so
/// the (layer, block) slice a prefill ships as soon as a layer is done is contiguous and
/// one head's keys in a block are adjacent for the attention scan.
struct kv_layout {
  std::size_t n_layers = 0;
  std::size_t kv_dim = 0;  ///< kv_heads * head_size
  std::size_t head_size = 0;
  std::size_t block_tokens = 16;

  [[nodiscard]] std::size_t slice_floats() const { return 2 * block_tokens * kv_dim; }
  [[nodiscard]] std::size_t block_floats() const { return n_layers * slice_floats(); }
  [[nodiscard]] std::size_t slice_bytes() const { return slice_floats() * sizeof(float); }
  [[nodiscard]] std::size_t block_bytes() const { return block_floats() * sizeof(float); }
};

/// A fixed pool of KV blocks in one contiguous allocation, so the transport can register
/// its bytes once. Block b starts at byte b * layout().block_bytes() of bytes(), and its
/// slice of `layer` at byte_offset(b, layer). Hands out blocks, each with a count of the
/// sequences holding it (a full block is shared by the choices forked from one prompt);
/// does not know about sequences. Not thread-safe: allocate/share/release come from the
/// engine's owner; readers and writers of distinct blocks may run in parallel.
class kv_pool {
 public:
  /// `n_blocks` blocks of `layout` in memory the pool owns; both must be non-zero.
  kv_pool(const kv_layout& layout, std::size_t n_blocks);
  /// `n_blocks` blocks of `layout` at the start of caller-owned `memory` (for example a
  /// transport-registered region), which must outlive the pool, hold at least
  /// n_blocks * layout.block_bytes() bytes and be aligned for float (BATON_CHECK: callers
  /// validate first, as cpu_engine::create does). Blocks are zeroed when allocated, so
  /// the memory's initial contents do not matter.
  kv_pool(const kv_layout& layout, std::size_t n_blocks, std::span<std::byte> memory);
  kv_pool(const kv_pool&) = delete;
  kv_pool& operator=(const kv_pool&) = delete;

  [[nodiscard]] const kv_layout& layout() const { return layout_; }
  [[nodiscard]] std::size_t n_blocks() const { return n_blocks_; }
  [[nodiscard]] std::size_t free_blocks() const { return free_.size(); }

  /// A zeroed free block (lowest id first), held once, or errc::overloaded when none is
  /// left.
  [[nodiscard]] expected<block_id> allocate();
  /// One more holder of `block`, which must be allocated.
  void share(block_id block);
  /// One holder less; the block is free once none is left. It must be allocated.
  void release(block_id block);
  /// The block table of a sequence forked from `blocks` holding `length` positions: its
  /// full blocks shared (they are never written again), the partly filled last one
  /// copied, since it is the one block the fork writes (copy on write, done at the fork).
  /// errc::overloaded when the copy finds no free block.
  [[nodiscard]] expected<std::vector<block_id>> fork(std::span<const block_id> blocks,
                                                     std::size_t length);

  /// The keys then values of `layer` in `block` (slice_floats() floats).
  [[nodiscard]] std::span<float> slice(block_id block, std::size_t layer);
  [[nodiscard]] std::span<const float> slice(block_id block, std::size_t layer) const;

  /// Where slice (`block`, `layer`) starts within bytes(); slice_bytes() long.
  [[nodiscard]] std::size_t byte_offset(block_id block, std::size_t layer) const;

  /// The whole pool (n_blocks() * block_bytes() bytes), for registering it with the
  /// transport. Valid for the pool's lifetime.
  [[nodiscard]] std::span<std::byte> bytes();
  [[nodiscard]] std::span<const std::byte> bytes() const;

 private:
  kv_layout layout_;
  std::size_t n_blocks_;
  std::vector<float> owned_;  ///< empty when the memory is the caller's
  std::span<float> memory_;
  std::vector<block_id> free_;          ///< a stack; highest id at the bottom
  std::vector<std::uint32_t> holders_;  ///< per block; 0: free
};

}  // namespace baton::engine
