#pragma once

#include <chrono>
#include <optional>

#include <caf/actor.hpp>

#include "actors/prefill/prefill_state.hpp"
#include "actors/shell.hpp"
#include "engine/model.hpp"
#include "runtime/node_context.hpp"

namespace baton::actors {

/// Faults a prefill node injects on purpose, for chaos tests (`baton node --fault`).
struct prefill_faults {
  /// The n-th slice write (from 0, over the actor's life) sends the wrong bytes.
  std::optional<std::uint64_t> corrupt_slice;
  /// Every slice write is posted this much later than it is ready.
  std::chrono::milliseconds delay_writes{0};
  crash_fault crash;  ///< the actor crashes at its n-th message (once)
};

struct prefill_options {
  device_options device;  ///< kv_blocks bounds the prompts held while they ship
  prefill_config config;
  std::chrono::milliseconds write_timeout{5'000};  ///< per slice write
  prefill_faults faults;
};

/// Spawns the prefill actor of this node: a thin shell around prefill_state whose engine's
/// KV pool lives in registered memory, so slices are written straight from it by RMA.
/// Detached (prefill computes on its own thread). `model` must outlive the actor.
[[nodiscard]] caf::actor spawn_prefill(runtime::node_context& ctx, const engine::model& model,
                                       prefill_options options);

}  // namespace baton::actors
