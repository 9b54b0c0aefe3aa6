#pragma once

// The membership actor: a thin CAF shell over membership_state. It ticks the state at
// its deadlines, sends its frames through the bridges, keeps the node's directory
// current, and tells the bridge of a dead or departed node, which then delivers a down
// message to every local actor watching an actor there.

#include <functional>
#include <string>
#include <vector>

#include <caf/actor.hpp>
#include <caf/atom.hpp>

#include "runtime/membership.hpp"
#include "runtime/node_context.hpp"

namespace baton::runtime {

/// `(leave_atom::value)`: announce the departure; the actor stops once it has spread.
using leave_atom = caf::atom_constant<caf::atom("m_leave")>;
/// `(members_atom::value)` answers with std::vector<wire::member>: the membership table.
using members_atom = caf::atom_constant<caf::atom("m_members")>;

struct membership_hooks {
  /// This node's join was refused; the node should stop and report `reason`.
  std::function<void(const std::string& reason)> refused;
  /// The departure announced by leave_atom has spread; the actor stops after this.
  std::function<void()> left;
  /// The table changed (for status pages); called from the actor's thread.
  std::function<void(const std::vector<wire::member>&)> changed;
};

/// Spawns and publishes (as "membership") the membership actor of the node `ctx`.
[[nodiscard]] caf::actor spawn_membership(node_context& ctx, wire::join self,
                                          std::vector<seed_node> seeds, membership_config config,
                                          std::uint64_t random_seed, membership_hooks hooks);

}  // namespace baton::runtime
