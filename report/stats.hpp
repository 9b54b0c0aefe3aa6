#pragma once

// Percentiles and summaries of latency samples, as every report prints them.

#include <cstddef>
#include <vector>

namespace baton::report {

/// The p-th percentile (0..100) of `sorted` with linear interpolation between closest
/// ranks (numpy's default, as vLLM's benchmark uses); 0 for an empty input.
[[nodiscard]] double percentile(const std::vector<double>& sorted, double p);

/// Mean and percentiles of one metric; count 0 when there are no samples.
struct summary {
  std::size_t count = 0;
  double mean = 0;
  double p50 = 0;
  double p90 = 0;
  double p99 = 0;
};
[[nodiscard]] summary summarize(std::vector<double> values);

}  // namespace baton::report
