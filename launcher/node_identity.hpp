#pragma once

// What a node must share with the cluster to join it: the model (a hash of the
// checkpoint's bytes), the KV layout, and the numerics fingerprint of its engine (the CPU
// engine's, or the emulated workers' when the topology's prefill and decode nodes emulate).

#include "actors/shell.hpp"
#include "base/error.hpp"
#include "runtime/topology.hpp"
#include "schemas/membership.hpp"

namespace baton::launcher {

/// The device of `node` as the topology gives it (pool sizes are the caller's to set).
[[nodiscard]] actors::device_options device_options_for(const runtime::topology& topology,
                                                        const runtime::node_spec& node);

/// The compatibility fields of a join for a node of `topology` (member fields empty).
[[nodiscard]] expected<wire::join> node_identity(const runtime::topology& topology);

}  // namespace baton::launcher
