#pragma once

// Seeds for simulation tests: a fixed range by default, or the one seed in BATON_TEST_SEED
// to replay a failure. Every seed is printed before its run, and a failing assertion says
// how to replay it (wrap each run in replay_hint's SCOPED_TRACE).

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace baton::testing {

/// `count` seeds from `first`, or only BATON_TEST_SEED when it is set.
inline std::vector<std::uint64_t> test_seeds(std::uint64_t first, std::uint64_t count) {
  if (const char* env = std::getenv("BATON_TEST_SEED"); env != nullptr && *env != '\0') {
    return {std::strtoull(env, nullptr, 10)};
  }
  std::vector<std::uint64_t> out;
  for (std::uint64_t i = 0; i < count; ++i) out.push_back(first + i);
  return out;
}

/// What to run to replay `seed` alone: printed now, and the text of a SCOPED_TRACE.
inline std::string replay_hint(std::uint64_t seed) {
  const auto* test = ::testing::UnitTest::GetInstance()->current_test_info();
  const std::string hint =
      "seed " + std::to_string(seed) + " (replay: BATON_TEST_SEED=" + std::to_string(seed) +
      " --gtest_filter=" + (test ? std::string(test->test_suite_name()) + "." + test->name() : "") +
      ")";
  std::printf("%s\n", hint.c_str());
  return hint;
}

}  // namespace baton::testing
