#pragma once

// The serving actors a node of a topology runs (router, prefill, decode), ready for its
// supervisor: the one place where the topology's roles and limits become actor options.

#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "actors/prefill/prefill_actor.hpp"
#include "actors/router/router_actor.hpp"
#include "base/error.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "runtime/supervisor.hpp"
#include "runtime/topology.hpp"

namespace baton::launcher {

/// What a node's serving actors compute with; loaded once, shared by its actors, and
/// outliving them.
struct serving_model {
  engine::model model;
  engine::tokenizer tok;
};

/// Loads the topology's [model]; the error names the file and what was wrong.
[[nodiscard]] expected<std::unique_ptr<serving_model>> load_serving_model(
    const runtime::topology& topology);

struct role_options {
  actors::prefill_faults faults;  ///< chaos tests only
  /// Chaos tests only: this role's actor crashes at its n-th message (once per process).
  std::optional<std::pair<wire::role, std::uint64_t>> crash;
  bool kv_after_compute = false;  ///< the serial baseline of `baton bench disagg`
  /// The router's front doors as bound ("host:port"), for its ready line; empty: none.
  std::string native_address;
  std::string http_address;
  /// Where a router registers for its front doors (router_gateway).
  std::shared_ptr<actors::router_entry> router;
};

/// The actors `node` runs, as the topology gives them. `model` must outlive them.
[[nodiscard]] std::vector<runtime::child_spec> role_actors(const runtime::topology& topology,
                                                           const runtime::node_spec& node,
                                                           const serving_model& model,
                                                           const role_options& options);

}  // namespace baton::launcher
