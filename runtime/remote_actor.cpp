#include "runtime/remote_actor.hpp"

#include <fmt/format.h>
#include <caf/all.hpp>

namespace baton::runtime {
namespace {

caf::behavior echo(caf::event_based_actor* self, node_context* ctx) {
  return {[ctx, self](inbound& in) { reply(*ctx, self, "echo", in, in.frame->body); },
          [](delivery_failure&) {}};
}

void send_to(node_context& ctx, caf::event_based_actor* self, outbound o) {
  if (auto b = ctx.bridge(o.target.node)) {
    self->send(b, std::move(o));
    return;
  }
  const auto target = o.target;
  self->send(
      caf::actor_cast<caf::actor>(self->address()),
      delivery_failure{
          target, 0, error{errc::not_found, fmt::format("node {} is not a member", target.node)}});
}

}  // namespace

void remote_actor::send(caf::event_based_actor* self, const std::string& from, wire::body body,
                        std::chrono::steady_clock::time_point deadline) const {
  send_to(*ctx_, self, outbound{{ctx_->name(), from}, address_, std::move(body), 0, deadline});
}

void remote_actor::monitor(caf::event_based_actor* self, const std::string& from) const {
  if (auto b = bridge()) {
    self->send(b, watch_remote{address_, {ctx_->name(), from}});
    return;
  }
  self->send(caf::actor_cast<caf::actor>(self->address()),
             remote_down{address_, error{errc::not_found,
                                         fmt::format("node {} is not a member", address_.node)}});
}

void reply(node_context& ctx, caf::event_based_actor* self, const std::string& from,
           const inbound& in, wire::body body) {
  send_to(
      ctx, self,
      outbound{{ctx.name(), from}, in.frame->source, std::move(body), in.frame->message_id, {}});
}

caf::actor spawn_echo(node_context& ctx) {
  // Spawned functions always take an argument besides `self`: CAF 0.17 dereferences a
  // null shared_ptr<tuple<>> for those that take none (UBSan stops on it).
  auto actor = ctx.system().spawn(echo, &ctx);
  ctx.publish("echo", actor);
  return actor;
}

}  // namespace baton::runtime
