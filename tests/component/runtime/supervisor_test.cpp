#include "runtime/supervisor.hpp"

#include <gtest/gtest.h>
#include <caf/all.hpp>
#include <caf/scheduler/test_coordinator.hpp>

namespace baton::runtime {
namespace {

using crash_atom = caf::atom_constant<caf::atom("t_crash")>;

class null_sink final : public frame_sink {
 public:
  void attach(const std::string&, const std::string&, caf::actor) override {}
  void post(const std::string&, wire::encoded_frame,
            std::chrono::steady_clock::time_point) override {}
  void detach(const std::string&, const caf::actor&) override {}
};

// Spawned functions take an argument besides `self`: CAF 0.17 trips UBSan on those
// that take none.
caf::behavior fragile(caf::event_based_actor* self, std::string why) {
  return {[self, why](crash_atom) { self->quit(caf::make_error(caf::sec::runtime_error, why)); }};
}

class SupervisorTest : public ::testing::Test {
 protected:
  SupervisorTest()
      : sys_(configure(cfg_)),
        sched_(dynamic_cast<caf::scheduler::test_coordinator&>(sys_.scheduler())),
        ctx_("a", 1, sys_, sink_, metrics_) {}

  static caf::actor_system_config& configure(caf::actor_system_config& cfg) {
    cfg.set("scheduler.policy", caf::atom("testing"));
    cfg.set("logger.verbosity", caf::atom("quiet"));
    return cfg;
  }

  void crash_worker() {
    caf::anon_send(ctx_.lookup("worker"), crash_atom::value);
    sched_.run();
  }

  caf::actor_system_config cfg_;
  caf::actor_system sys_;
  caf::scheduler::test_coordinator& sched_;
  null_sink sink_;
  metrics_registry metrics_;
  node_context ctx_;
};

TEST_F(SupervisorTest, RestartsACrashedActorThenGivesUpAfterTheBudget) {
  std::string gave_up;
  auto sup = spawn_supervisor(
      ctx_, {{"worker", [](node_context& ctx) { return ctx.system().spawn(fragile, "boom"); }}},
      restart_budget{2, std::chrono::minutes(1)}, [&](const std::string& why) { gave_up = why; });
  sched_.run();
  auto first = ctx_.lookup("worker");
  ASSERT_TRUE(first);

  crash_worker();
  auto second = ctx_.lookup("worker");
  ASSERT_TRUE(second);
  EXPECT_NE(first.address(), second.address()) << "restarted and republished";
  crash_worker();
  EXPECT_TRUE(ctx_.lookup("worker"));
  EXPECT_TRUE(gave_up.empty());
  EXPECT_NE(metrics_.prometheus_text().find("baton_actor_restarts_total 2"), std::string::npos);

  crash_worker();
  EXPECT_NE(gave_up.find("actor 'worker' crashed 3 times"), std::string::npos) << gave_up;
  EXPECT_FALSE(ctx_.lookup("worker")) << "a given-up actor is no longer published";
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  sched_.run();
}

TEST_F(SupervisorTest, StoppingTheSupervisorStopsItsChildren) {
  auto sup = spawn_supervisor(
      ctx_, {{"worker", [](node_context& ctx) { return ctx.system().spawn(fragile, "boom"); }}}, {},
      [](const std::string&) {});
  sched_.run();
  auto worker = ctx_.lookup("worker");
  ASSERT_TRUE(worker);
  bool worker_down = false;
  // Held, or CAF would end the watcher as unreachable.
  auto watcher = sys_.spawn(
      [&](caf::event_based_actor* self, caf::actor watched) -> caf::behavior {
        self->monitor(watched);
        self->set_down_handler([&](caf::down_msg&) { worker_down = true; });
        return {[](caf::unit_t) {}};
      },
      worker);
  sched_.run();
  caf::anon_send_exit(sup, caf::exit_reason::user_shutdown);
  sched_.run();
  EXPECT_TRUE(worker_down);
  caf::anon_send_exit(watcher, caf::exit_reason::user_shutdown);
  sched_.run();
}

}  // namespace
}  // namespace baton::runtime
