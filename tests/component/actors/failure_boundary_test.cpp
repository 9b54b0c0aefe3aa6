// The serving actors' failure boundary (actors::install_failure_boundary): a handler that
// throws ends only its actor, which the node's supervisor restarts; it is counted.
#include <stdexcept>

#include <gtest/gtest.h>
#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

#include "actors/shell.hpp"
#include "runtime/supervisor.hpp"

namespace baton::actors {
namespace {

using throw_atom = caf::atom_constant<caf::atom("t_throw")>;
using ping_atom = caf::atom_constant<caf::atom("t_ping")>;

class null_sink final : public runtime::frame_sink {
 public:
  void attach(const std::string&, const std::string&, caf::actor) override {}
  void post(const std::string&, wire::encoded_frame,
            std::chrono::steady_clock::time_point) override {}
  void detach(const std::string&, const caf::actor&) override {}
};

// `unused`: CAF 0.17 trips UBSan on spawned functions that take no argument besides self.
caf::behavior thrower(caf::event_based_actor* self, runtime::node_context* ctx, int /*unused*/) {
  install_failure_boundary(*ctx, self, "thrower");
  return {
      [](throw_atom) { throw std::runtime_error("a bug in a handler"); },
      [](ping_atom) { return ping_atom::value; },
  };
}

TEST(FailureBoundary, AThrowingHandlerEndsOnlyItsActorWhichIsRestartedAndCounted) {
  caf::actor_system_config cfg;
  cfg.set("scheduler.policy", caf::atom("testing"));
  cfg.set("logger.verbosity", caf::atom("quiet"));
  caf::actor_system sys{cfg};
  auto& sched = dynamic_cast<caf::scheduler::test_coordinator&>(sys.scheduler());
  null_sink sink;
  runtime::metrics_registry metrics;
  runtime::node_context ctx("a", 1, sys, sink, metrics);
  auto sup = runtime::spawn_supervisor(
      ctx, {{"thrower", [](runtime::node_context& c) { return c.system().spawn(thrower, &c, 0); }}},
      {}, [](const std::string&) {});
  sched.run();
  const auto first = ctx.lookup("thrower");
  ASSERT_TRUE(first);
  caf::anon_send(first, throw_atom::value);
  sched.run();
  const auto second = ctx.lookup("thrower");
  ASSERT_TRUE(second) << "restarted and published again";
  EXPECT_NE(first.address(), second.address());
  const auto text = metrics.prometheus_text();
  EXPECT_NE(text.find("baton_actor_failures_total{actor=\"thrower\"} 1"), std::string::npos)
      << text;
  EXPECT_NE(text.find("baton_actor_restarts_total 1"), std::string::npos) << text;
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  sched.run();
}

}  // namespace
}  // namespace baton::actors
