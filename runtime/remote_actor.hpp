#pragma once

// How an actor on this node talks to an actor on another: send, request with a deadline,
// and monitor, all with the schema's message types. The frames go through the bridge to
// the target's node; nothing here touches CAF's own remoting.

#include <chrono>
#include <string>

#include <caf/actor.hpp>
#include <caf/event_based_actor.hpp>

#include "runtime/bridge.hpp"
#include "runtime/messages.hpp"
#include "runtime/node_context.hpp"

namespace baton::runtime {

/// A handle to the actor `address` on another node. Cheap to copy; `ctx` must outlive it.
class remote_actor {
 public:
  remote_actor(node_context& ctx, wire::actor_address address)
      : ctx_(&ctx), address_(std::move(address)) {}

  [[nodiscard]] const wire::actor_address& address() const { return address_; }

  /// Sends `body` from `self`, published here as `from`. If it cannot be delivered,
  /// `self` receives a delivery_failure.
  void send(caf::event_based_actor* self, const std::string& from, wire::body body,
            std::chrono::steady_clock::time_point deadline = {}) const;

  /// Sends `body` and expects one reply within `timeout`: use the result like CAF's
  /// request(), `.then([](inbound& reply) {...}, [](caf::error& e) {...})`.
  template <class Self>
  auto request(Self* self, const std::string& from, wire::body body,
               std::chrono::milliseconds timeout) const {
    return self->request(bridge(), timeout, request_atom::value,
                         outbound{{ctx_->name(), from},
                                  address_,
                                  std::move(body),
                                  0,
                                  std::chrono::steady_clock::now() + timeout});
  }

  /// `self` (published as `from`) receives remote_down when the actor terminates or its
  /// node dies or leaves.
  void monitor(caf::event_based_actor* self, const std::string& from) const;

 private:
  /// The bridge to the target's node; invalid if the node is unknown.
  [[nodiscard]] caf::actor bridge() const { return ctx_->bridge(address_.node); }

  node_context* ctx_;
  wire::actor_address address_;
};

/// Answers the frame `in` with `body`, from `self` published as `from`.
void reply(node_context& ctx, caf::event_based_actor* self, const std::string& from,
           const inbound& in, wire::body body);

/// An actor that answers every frame with the same body: for benchmarks and for checking
/// the path to a node. Published as "echo" by every node.
[[nodiscard]] caf::actor spawn_echo(node_context& ctx);

}  // namespace baton::runtime
