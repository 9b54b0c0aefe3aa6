#pragma once

// The node supervisor: starts a node's actors, publishes each under its name, and
// restarts one that exits abnormally, within a restart budget. A child that keeps
// crashing exhausts the budget and the supervisor gives up, so the node stops cleanly
// instead of flapping.

#include <chrono>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/actor_system.hpp>

#include "runtime/node_context.hpp"

namespace baton::runtime {

struct child_spec {
  std::string name;  ///< published under this name
  std::function<caf::actor(node_context&)> spawn;
};

struct restart_budget {
  int max_restarts = 5;                      ///< within `window`...
  std::chrono::milliseconds window{60'000};  ///< ...beyond that the supervisor gives up
};

/// Spawns the supervisor and its children. `give_up` is called (once) with the reason
/// when a child exhausts the budget; `ctx` must outlive the supervisor.
[[nodiscard]] caf::actor spawn_supervisor(node_context& ctx, std::vector<child_spec> children,
                                          restart_budget budget,
                                          std::function<void(const std::string&)> give_up);

}  // namespace baton::runtime
