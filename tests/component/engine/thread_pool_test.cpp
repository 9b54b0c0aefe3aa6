#include "engine/thread_pool.hpp"

#include <atomic>
#include <vector>

#include <gtest/gtest.h>

namespace baton::engine {
namespace {

TEST(ThreadPool, RunsEachParticipantOncePerJob) {
  for (const std::size_t threads : {1U, 2U, 4U}) {
    thread_pool pool(threads);
    ASSERT_EQ(pool.size(), threads);
    for (int job = 0; job < 50; ++job) {
      std::vector<std::atomic<int>> calls(threads);
      pool.run([&](std::size_t i) { calls[i].fetch_add(1); });
      for (std::size_t i = 0; i < threads; ++i) EXPECT_EQ(calls[i].load(), 1) << i;
    }
  }
}

TEST(ThreadPool, ZeroMeansTheCallerAlone) {
  thread_pool pool(0);
  EXPECT_EQ(pool.size(), 1U);
  int calls = 0;
  pool.run([&](std::size_t i) { calls += i == 0 ? 1 : 100; });
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace baton::engine
