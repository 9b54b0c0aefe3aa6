#pragma once

// What a node must share with the cluster to join it: the model (a hash of the
// checkpoint's bytes), the KV layout, and the numerics fingerprint of its engine.

#include "base/error.hpp"
#include "runtime/topology.hpp"
#include "schemas/membership.hpp"

namespace baton::tools {

/// The compatibility fields of a join for a node of `topology` (member fields empty).
[[nodiscard]] expected<wire::join> node_identity(const runtime::topology& topology);

}  // namespace baton::tools
