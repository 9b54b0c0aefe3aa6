#pragma once

// Plain C++ forms of the wire types shared by membership and inference messages
// (schemas/common.capnp). Everything the codec hands out is one of these: no Cap'n Proto
// reader leaves schemas/.

#include <cstdint>
#include <string>
#include <vector>

namespace baton::wire {

/// The wire version this build speaks; the frame header and the join handshake carry it.
inline constexpr std::uint16_t wire_version = 4;

enum class request_id : std::uint64_t {};

/// An actor by location: the node's name from the topology and the actor's name there.
struct actor_address {
  std::string node;
  std::string actor;
  bool operator==(const actor_address&) const = default;
};

/// The shape of a node's KV cache; peers can exchange KV blocks only when these match.
struct kv_layout {
  std::uint32_t block_tokens = 0;
  std::uint32_t layers = 0;
  std::uint32_t kv_heads = 0;
  std::uint32_t head_dim = 0;
  std::uint32_t element_bytes = 0;
  bool operator==(const kv_layout&) const = default;
};

/// Where a request's KV blocks live: blocks of one pool in one registered region, block
/// id b at bytes [offset + b * block_bytes, offset + (b + 1) * block_bytes) of the region.
/// Decoded descriptors satisfy length == block_bytes * block_ids.size(), offset + length
/// does not overflow, and checksums is empty or has one entry per block. A block address
/// (offset + b * block_bytes) is not checked here; the transport refuses any RMA outside
/// what the owner granted.
struct kv_descriptor {
  std::string node;
  std::uint64_t region_key = 0;
  std::uint64_t offset = 0;  ///< of block 0 of the pool within the region
  std::uint64_t length = 0;
  std::uint32_t block_bytes = 0;
  std::vector<std::uint32_t> block_ids;
  std::vector<std::uint64_t> checksums;
  /// The owning endpoint's transport node id (transport::node_id): what RMA descriptors
  /// (transport::remote_slice::node) name.
  std::uint64_t fabric_node = 0;
  bool operator==(const kv_descriptor&) const = default;
};

enum class node_kind : std::uint8_t { trainium, wafer_scale, cpu };
enum class role : std::uint8_t { router, prefill, decode, kv };
enum class member_state : std::uint8_t { alive, suspect, dead, left };
enum class finish_reason : std::uint8_t { length, end_of_text, stop, cancelled };

}  // namespace baton::wire
