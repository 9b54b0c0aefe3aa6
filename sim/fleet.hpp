#pragma once

// The fleet a simulation runs: groups of modelled prefill and decode nodes (a hardware
// profile each, engine/profiles.toml), the links they hang off, the routers in front, the
// runtime's per-message cost and the failures to inject. Read from a TOML file (written by
// `baton sim gen`, docs/simulator.md), with errors naming file:line:column and the key.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "actors/router/router_state.hpp"
#include "base/error.hpp"
#include "engine/roofline.hpp"
#include "schemas/types.hpp"

namespace baton::sim {

/// A node's network attachment: what one of its KV transfers may use, and the one-way
/// latency from it to the network's core (a message between two nodes pays both ends).
struct link_spec {
  std::string name;
  double bandwidth_bytes_per_s = 0;
  double latency_s = 0;
};

/// `count` nodes named "<name>-0" ... of one role on one hardware profile.
struct node_group {
  std::string name;
  wire::role role = wire::role::decode;  ///< prefill or decode
  wire::node_kind kind = wire::node_kind::cpu;
  std::size_t count = 0;
  engine::hardware_profile hardware;
  std::size_t link = 0;       ///< index into fleet_spec::links
  std::size_t kv_blocks = 0;  ///< decode: KV blocks of kv_block_tokens positions
  std::size_t max_batch = 0;  ///< decode: sequences per step at most
  std::uint32_t line = 0;     ///< of its [[group]] table
};

/// Nodes die at random (exponential lifetimes, seeded) and come back after a while.
struct failures_spec {
  double node_deaths_per_hour = 0;  ///< per node; 0: none
  double restart_after_s = 60;
  double detect_s = 0.75;  ///< from a death until the routers know (membership's dead_after)
};

struct fleet_spec {
  std::filesystem::path file;
  engine::model_shape shape;
  engine::precision numbers = engine::precision::bf16;
  std::size_t block_tokens = 16;
  /// KV moved between nodes is the shape's real size divided by this, as an emulated
  /// cluster's `[emulated] scale` stores it; 1 for real hardware.
  std::size_t kv_scale = 1;
  std::size_t routers = 1;
  actors::router_config router;
  /// One message's fixed cost in the runtime (encode, post, progress, decode, deliver),
  /// paid once per hop: half the round trip `baton bench actors` measures.
  double message_s = 50e-6;
  /// Modelled compute times x this, as `[emulated] time_scale`.
  double time_scale = 1.0;
  failures_spec failures;
  std::vector<link_spec> links;
  std::vector<node_group> groups;

  [[nodiscard]] std::size_t nodes(wire::role role) const;
  [[nodiscard]] std::size_t nodes() const;
};

/// Parses a fleet file. errc::invalid_argument "file:line:column: key: what was expected"
/// for malformed TOML, an unknown or missing key, a value out of range, an unknown profile,
/// shape or link, or a fleet without prefill or decode nodes.
[[nodiscard]] expected<fleet_spec> parse_fleet(std::string_view text,
                                               const std::filesystem::path& file);
/// Reads and parses `file` (errc::not_found when it cannot be read).
[[nodiscard]] expected<fleet_spec> load_fleet(const std::filesystem::path& file);

/// Link classes `baton sim gen --link` knows, with their figures and sources.
struct link_class {
  std::string_view name;
  double bandwidth_bytes_per_s;
  double latency_s;
  std::string_view source;
};
[[nodiscard]] const std::vector<link_class>& link_classes();

/// What `baton sim gen` writes.
struct gen_options {
  std::size_t prefill = 2;
  std::size_t decode = 2;
  std::string profile_prefill = "trn2";
  std::string profile_decode = "cs3";
  std::string shape = "llama-3.1-70b";
  std::string link = "efa";
  std::size_t routers = 1;
  std::size_t decode_max_batch = 32;
  std::size_t decode_kv_blocks = 0;  ///< 0: max_batch sequences of the shape's context
  std::size_t kv_scale = 1;
  std::size_t block_tokens = 16;
  double message_us = 50;
  double time_scale = 1.0;
  double node_deaths_per_hour = 0;
};

/// The text of a fleet file for `options` (it parses back to that fleet); errc::not_found
/// for an unknown profile, shape or link.
[[nodiscard]] expected<std::string> generate_fleet(const gen_options& options);

}  // namespace baton::sim
