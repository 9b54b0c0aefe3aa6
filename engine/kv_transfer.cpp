#include "engine/kv_transfer.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <xxhash.h>

namespace baton::engine {
namespace {

expected<block_id> block_at(const cpu_engine& engine, sequence_id sequence, std::size_t block_index,
                            std::size_t layer) {
  const auto blocks = engine.blocks(sequence);
  if (block_index >= blocks.size() || layer >= engine.pool().layout().n_layers) {
    return fail(errc::invalid_argument,
                fmt::format("kv slice (layer {}, block {}) is out of range: the sequence has {} "
                            "blocks of {} layers",
                            layer, block_index, blocks.size(), engine.pool().layout().n_layers));
  }
  return blocks[block_index];
}

}  // namespace

std::uint64_t block_checksum(const kv_pool& pool, block_id block) {
  // The layers of a block are adjacent, so the first slice starts the whole block.
  const float* start = pool.slice(block, 0).data();
  return XXH3_64bits(start, pool.layout().block_floats() * sizeof(float));
}

std::vector<std::uint64_t> block_checksums(const kv_pool& pool, std::span<const block_id> blocks) {
  std::vector<std::uint64_t> sums;
  sums.reserve(blocks.size());
  for (const block_id block : blocks) sums.push_back(block_checksum(pool, block));
  return sums;
}

std::vector<std::uint64_t> block_checksums(const cpu_engine& engine, sequence_id sequence) {
  return block_checksums(engine.pool(), engine.blocks(sequence));
}

expected<std::span<const float>> export_slice(const cpu_engine& engine, sequence_id sequence,
                                              std::size_t block_index, std::size_t layer) {
  auto block = block_at(engine, sequence, block_index, layer);
  if (!block) return tl::unexpected(block.error());
  return engine.pool().slice(*block, layer);
}

expected<void> import_slice(cpu_engine& engine, sequence_id sequence, std::size_t block_index,
                            std::size_t layer, std::span<const float> data) {
  auto block = block_at(engine, sequence, block_index, layer);
  if (!block) return tl::unexpected(block.error());
  const std::span<float> target = engine.pool().slice(*block, layer);
  if (data.size() != target.size()) {
    return fail(errc::invalid_argument,
                fmt::format("kv slice (layer {}, block {}) has {} floats, expected {}", layer,
                            block_index, data.size(), target.size()));
  }
  std::copy(data.begin(), data.end(), target.begin());
  return {};
}

expected<void> verify_block(const kv_pool& pool, std::span<const block_id> blocks,
                            std::size_t block_index, std::uint64_t checksum) {
  if (block_index >= blocks.size()) {
    return fail(errc::invalid_argument, fmt::format("kv block {} is out of range: the sequence "
                                                    "has {} blocks",
                                                    block_index, blocks.size()));
  }
  const std::uint64_t actual = block_checksum(pool, blocks[block_index]);
  if (actual != checksum) {
    return fail(errc::invalid_argument,
                fmt::format("kv block {}: checksum {:016x}, expected {:016x}", block_index, actual,
                            checksum));
  }
  return {};
}

expected<void> verify_block(const cpu_engine& engine, sequence_id sequence, std::size_t block_index,
                            std::uint64_t checksum) {
  return verify_block(engine.pool(), engine.blocks(sequence), block_index, checksum);
}

}  // namespace baton::engine
