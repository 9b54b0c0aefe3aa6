#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

#include "base/error.hpp"
#include "engine/cpu_engine.hpp"

namespace baton::engine {

/// Moving a sequence's KV cache between engines in (layer, block) slices. A slice is
/// contiguous in the pool (kv_layout), so a prefill node can ship each layer's part of a
/// block as soon as that layer is computed, straight from the registered pool. Each block
/// carries an XXH3-64 checksum of all its bytes (every layer, as stored), which the
/// receiver verifies before the sequence decodes.

/// XXH3_64bits of `block`'s bytes, all layers.
[[nodiscard]] std::uint64_t block_checksum(const kv_pool& pool, block_id block);

/// The checksums of `blocks` of `pool`, in order.
[[nodiscard]] std::vector<std::uint64_t> block_checksums(const kv_pool& pool,
                                                         std::span<const block_id> blocks);

/// Checks block `blocks[block_index]` of `pool` against `checksum`; errc::invalid_argument
/// naming the block and both values on a mismatch, or when the index is out of range.
[[nodiscard]] expected<void> verify_block(const kv_pool& pool, std::span<const block_id> blocks,
                                          std::size_t block_index, std::uint64_t checksum);

/// The checksums of every block of `sequence`, in block-table order.
[[nodiscard]] std::vector<std::uint64_t> block_checksums(const cpu_engine& engine,
                                                         sequence_id sequence);

/// A view of slice (`layer`, `block_index`) of `sequence`, valid until the sequence is
/// removed. errc::invalid_argument if either index is out of range.
[[nodiscard]] expected<std::span<const float>> export_slice(const cpu_engine& engine,
                                                            sequence_id sequence,
                                                            std::size_t block_index,
                                                            std::size_t layer);

/// Copies `data` (exactly one slice) into slice (`layer`, `block_index`) of a sequence
/// made by cpu_engine::reserve_sequence. errc::invalid_argument on a bad index or size.
[[nodiscard]] expected<void> import_slice(cpu_engine& engine, sequence_id sequence,
                                          std::size_t block_index, std::size_t layer,
                                          std::span<const float> data);

/// Checks block `block_index` of `sequence` against `checksum`; errc::invalid_argument
/// naming the block and both values on a mismatch (the caller retries or recomputes).
[[nodiscard]] expected<void> verify_block(const cpu_engine& engine, sequence_id sequence,
                                          std::size_t block_index, std::uint64_t checksum);

}  // namespace baton::engine
