#include "runtime/membership_actor.hpp"

#include <spdlog/spdlog.h>
#include <caf/all.hpp>

#include "runtime/messages.hpp"

CAF_ALLOW_UNSAFE_MESSAGE_TYPE(std::vector<baton::wire::member>)

namespace baton::runtime {
namespace {

using tick_atom = caf::atom_constant<caf::atom("m_tick")>;
using stop_atom = caf::atom_constant<caf::atom("m_stop")>;
using clock = std::chrono::steady_clock;

struct membership_actor_state {
  static inline const char* name = "baton.membership";
  node_context* ctx = nullptr;
  std::optional<membership_state> state;
  membership_hooks hooks;
  clock::time_point tick_at = clock::time_point::max();
  bool leaving = false;
};

using membership_actor = caf::stateful_actor<membership_actor_state>;

/// Schedules a tick for the state's next deadline unless an earlier one is pending.
void schedule(membership_actor* self) {
  auto& st = self->state;
  const auto at = st.state->next_deadline();
  if (at >= st.tick_at) return;
  st.tick_at = at;
  const auto delay = std::max<clock::duration>(at - clock::now(), std::chrono::milliseconds(1));
  self->delayed_send(self, delay, tick_atom::value);
}

void apply(membership_actor* self, membership_output out) {
  auto& st = self->state;
  auto& ctx = *st.ctx;
  ctx.set_incarnation(st.state->self().incarnation);
  for (auto& s : out.sends) {
    auto bridge = ctx.bridge(s.node, s.fabric_address);
    if (!bridge) continue;
    self->send(
        bridge,
        outbound{{ctx.name(), "membership"}, {s.node, "membership"}, std::move(s.body), 0, {}});
  }
  for (const auto& m : out.changes) {
    ctx.update_member(m);
    spdlog::info("member {} is {} (incarnation {})", m.node, to_string(m.state), m.incarnation);
    if (m.state == wire::member_state::dead || m.state == wire::member_state::left) {
      if (auto bridge = ctx.bridge(m.node)) {
        const bool dead = m.state == wire::member_state::dead;
        self->send(
            bridge,
            node_gone{m.node, error{errc::disconnected,
                                    fmt::format("node {} {}", m.node,
                                                dead ? "was declared dead" : "left the cluster")}});
        ctx.drop_bridge(m.node);
      }
    }
  }
  if (!out.changes.empty() && st.hooks.changed) st.hooks.changed(st.state->members());
  if (out.refused && st.hooks.refused) st.hooks.refused(*out.refused);
  schedule(self);
}

caf::behavior membership_behavior(membership_actor* self, node_context* ctx, wire::join me,
                                  std::vector<seed_node> seeds, membership_config config,
                                  std::uint64_t random_seed, membership_hooks hooks) {
  auto& st = self->state;
  st.ctx = ctx;
  st.hooks = std::move(hooks);
  st.state.emplace(std::move(me), std::move(seeds), config, random_seed);
  ctx->update_member(st.state->self());
  apply(self, st.state->start(clock::now()));
  return {
      [self](tick_atom) {
        auto& s = self->state;
        s.tick_at = clock::time_point::max();
        apply(self, s.state->on_tick(clock::now()));
      },
      [self](inbound& in) {
        apply(self,
              self->state.state->on_message(in.frame->source.node, in.frame->body, clock::now()));
      },
      [self](leave_atom) {
        apply(self, self->state.state->leave(clock::now()));
        // Keep probing for a few periods so the departure spreads, then stop.
        self->delayed_send(self, std::chrono::milliseconds(300), stop_atom::value);
      },
      [self](stop_atom) {
        if (self->state.hooks.left) self->state.hooks.left();
        self->quit();
      },
      [self](members_atom) { return self->state.state->members(); },
  };
}

}  // namespace

caf::actor spawn_membership(node_context& ctx, wire::join self, std::vector<seed_node> seeds,
                            membership_config config, std::uint64_t random_seed,
                            membership_hooks hooks) {
  auto actor = ctx.system().spawn(membership_behavior, &ctx, std::move(self), std::move(seeds),
                                  config, random_seed, std::move(hooks));
  ctx.publish("membership", actor);
  return actor;
}

}  // namespace baton::runtime
