#include "runtime/supervisor.hpp"

#include <deque>
#include <map>

#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <caf/all.hpp>

namespace baton::runtime {
namespace {

struct child_state {
  child_spec spec;
  caf::actor actor;
  std::deque<std::chrono::steady_clock::time_point> restarts;
};

struct supervisor_state {
  static inline const char* name = "baton.supervisor";
  node_context* ctx = nullptr;
  restart_budget budget;
  std::function<void(const std::string&)> give_up;
  std::map<caf::actor_addr, child_state> children;
  counter* restarts = nullptr;
  bool gave_up = false;
};

using supervisor_actor = caf::stateful_actor<supervisor_state>;

void launch(supervisor_actor* self, child_state child) {
  child.actor = child.spec.spawn(*self->state.ctx);
  self->monitor(child.actor);
  self->state.ctx->publish(child.spec.name, child.actor);
  auto addr = child.actor.address();
  self->state.children.emplace(addr, std::move(child));
}

void on_down(supervisor_actor* self, caf::down_msg& dm) {
  auto& st = self->state;
  auto it = st.children.find(dm.source);
  if (it == st.children.end()) return;
  auto child = std::move(it->second);
  st.children.erase(it);
  if (!dm.reason || dm.reason == caf::exit_reason::user_shutdown || st.gave_up) {
    st.ctx->unpublish(child.spec.name);
    return;
  }
  const auto now = std::chrono::steady_clock::now();
  while (!child.restarts.empty() && now - child.restarts.front() > st.budget.window) {
    child.restarts.pop_front();
  }
  if (static_cast<int>(child.restarts.size()) >= st.budget.max_restarts) {
    st.gave_up = true;
    st.ctx->unpublish(child.spec.name);
    const auto why = fmt::format("actor '{}' crashed {} times within {} ms (last: {}); giving up",
                                 child.spec.name, child.restarts.size() + 1,
                                 st.budget.window.count(), caf::to_string(dm.reason));
    spdlog::error("{}", why);
    if (st.give_up) st.give_up(why);
    return;
  }
  spdlog::warn("actor '{}' exited ({}); restarting", child.spec.name, caf::to_string(dm.reason));
  child.restarts.push_back(now);
  st.restarts->add();
  launch(self, std::move(child));
}

caf::behavior supervisor(supervisor_actor* self, node_context* ctx,
                         std::vector<child_spec> children, restart_budget budget,
                         std::function<void(const std::string&)> give_up) {
  auto& st = self->state;
  st.ctx = ctx;
  st.budget = budget;
  st.give_up = std::move(give_up);
  st.restarts = &ctx->metrics().get_counter("baton_actor_restarts_total",
                                            "Actors restarted by the node supervisor.");
  self->set_down_handler([self](caf::down_msg& dm) { on_down(self, dm); });
  self->set_exit_handler([self](caf::exit_msg& em) {
    // Stopping the supervisor stops its children.
    for (auto& [addr, child] : self->state.children) self->send_exit(child.actor, em.reason);
    self->quit(em.reason);
  });
  for (auto& spec : children) launch(self, child_state{std::move(spec), {}, {}});
  return {[](caf::unit_t) {}};
}

}  // namespace

caf::actor spawn_supervisor(node_context& ctx, std::vector<child_spec> children,
                            restart_budget budget,
                            std::function<void(const std::string&)> give_up) {
  return ctx.system().spawn(supervisor, &ctx, std::move(children), budget, std::move(give_up));
}

}  // namespace baton::runtime
