#pragma once

#include <caf/actor.hpp>

#include "actors/decode/decode_state.hpp"
#include "actors/shell.hpp"
#include "engine/model.hpp"
#include "runtime/node_context.hpp"

namespace baton::actors {

struct decode_options {
  device_options device;  ///< kv_blocks is the pool size (0: the engine's default)
  decode_config config;
  crash_fault crash;  ///< chaos tests only
};

/// Spawns the decode actor of this node: a thin shell around decode_state. Its engine's KV
/// pool lives in memory registered with the node's transport (ctx.rma()), which every
/// prefill node is granted access to as it joins. Detached (decode steps compute on its
/// own thread). `model` must outlive the actor.
[[nodiscard]] caf::actor spawn_decode(runtime::node_context& ctx, const engine::model& model,
                                      decode_options options);

}  // namespace baton::actors
