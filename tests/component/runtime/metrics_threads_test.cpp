// The metrics registry updated from several threads at once.
#include "runtime/metrics.hpp"

#include <thread>
#include <vector>

#include <gtest/gtest.h>

namespace baton::runtime {
namespace {

TEST(Metrics, UpdatesFromManyThreadsAreNotLost) {
  metrics_registry registry;
  auto& c = registry.get_counter("hits_total", "h");
  auto& h = registry.get_histogram("lat_seconds", "h", exponential_bounds(0.001, 10, 3));
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        c.add();
        h.observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(c.value(), 40000u);
  EXPECT_EQ(h.cumulative_count(h.bounds().size()), 40000u);
  EXPECT_EQ(h.cumulative_count(1), 0u);
  EXPECT_EQ(h.bounds(), (std::vector<double>{0.001, 0.01, 0.1}));
}

}  // namespace
}  // namespace baton::runtime
