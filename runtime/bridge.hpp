#pragma once

// The bridge to one peer node: sends what local actors send to actors there through its
// peer_link (encoded, under credit-based flow control); decodes what arrives from
// there, drops frames from stale incarnations, and delivers each frame to the local actor
// it names, answering an unknown target with a failure frame. It also keeps remote
// monitors in both directions and the pending requests to the peer, and fails all of
// them when the peer's node is gone.

#include <memory>
#include <string>

#include <caf/actor.hpp>
#include <caf/atom.hpp>

#include "runtime/node_context.hpp"

namespace baton::runtime {

/// Request marker: `request(bridge, timeout, request_atom::value, outbound)` answers with
/// the peer's reply as `inbound`, or an error.
using request_atom = caf::atom_constant<caf::atom("b_request")>;
/// A decoded frame the hub hands over: `(decoded_atom::value, inbound)`.
using decoded_atom = caf::atom_constant<caf::atom("b_decoded")>;

/// Spawns the bridge to `peer`, sending through `link`; `ctx` must outlive it.
[[nodiscard]] caf::actor spawn_bridge(node_context& ctx, const std::string& peer,
                                      std::shared_ptr<peer_link> link);

/// True for frames under flow control; membership and runtime control frames are exempt.
[[nodiscard]] bool flow_controlled(const wire::body& body);

}  // namespace baton::runtime
