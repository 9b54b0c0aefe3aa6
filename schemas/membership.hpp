#pragma once

// Membership messages (schemas/membership.capnp) in plain C++.

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "schemas/types.hpp"

namespace baton::wire {

/// A node as the membership table knows it; a higher incarnation overrides a lower one.
struct member {
  std::string node;
  std::uint64_t incarnation = 0;
  member_state state = member_state::alive;
  node_kind kind = node_kind::cpu;
  std::string device;  ///< "cpu" or "emulated:PROFILE"
  std::vector<role> roles;
  std::string fabric_address;
  std::string admin_address;
  bool draining = false;        ///< takes no new work: finishing what it has, then leaving
  std::uint32_t kv_blocks = 0;  ///< KV pool size in blocks (decode nodes), for placement
  std::string suspecter{};      ///< in a suspect update: the node that suspects it
  std::uint32_t restarts = 0;   ///< times its supervisor (baton up, systemd) restarted it
  /// The incarnation its process started with (refutations raise the incarnation, not this):
  /// another value under the same name is a new process, its predecessor gone. 0: not said.
  std::uint64_t started = 0;
  bool operator==(const member&) const = default;
};

/// The join handshake's proof of the cluster secret (runtime/membership.hpp): all zero
/// in a cluster without a secret.
struct join_auth {
  std::array<std::uint64_t, 2> nonce{};  ///< its sender's, fresh for each handshake
  std::array<std::uint64_t, 2> peer{};   ///< the other side's nonce it answers; zero: none
  std::array<std::uint64_t, 4> proof{};  ///< HMAC-SHA256 under the secret; zero: none
  bool operator==(const join_auth&) const = default;
};

/// A node asks a seed to join. Refused unless wire version, model hash, KV layout and
/// numerics fingerprint match the cluster's.
struct join {
  wire::member member;
  std::uint16_t wire_version = 0;
  std::uint64_t model_hash = 0;
  kv_layout layout;
  std::string numerics_fingerprint;
  join_auth auth{};  ///< the proof zero: a challenge is asked for
  bool operator==(const join&) const = default;
};

struct join_reply {
  bool accepted = false;
  std::string reason;  ///< why a join was refused; empty when accepted
  std::vector<member> members;
  bool challenge = false;  ///< neither accepted nor refused: prove the secret for auth.nonce
  join_auth auth{};        ///< the seed's nonce and proof
  bool operator==(const join_reply&) const = default;
};

/// A probe, or its acknowledgement, with the sender's load and piggybacked updates.
struct heartbeat {
  std::uint64_t sequence = 0;
  bool is_ack = false;
  std::uint32_t queue_depth = 0;
  std::uint32_t free_kv_blocks = 0;
  std::vector<member> updates;
  bool operator==(const heartbeat&) const = default;
};

struct leave {
  std::string reason;
  bool operator==(const leave&) const = default;
};

}  // namespace baton::wire
