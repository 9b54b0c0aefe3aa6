#pragma once

// What a simulation sends: arrivals (Poisson, bursty or a trace of JSON lines), prompt and
// output length distributions, shared-prefix groups and service-level objectives. Read
// from a TOML file (docs/simulator.md), with errors naming file:line and the key; a trace
// line that is wrong is named by the trace's file and line.

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "bench/serve_load.hpp"

namespace baton::sim {

enum class arrival_process : std::uint8_t {
  poisson,  ///< exponential gaps at `rate`
  bursty,   ///< Poisson at rate x (burst_s + idle_s) / burst_s during bursts, none between
  trace,    ///< times and lengths from a JSON-lines file
};

struct workload_spec {
  std::filesystem::path file;
  arrival_process arrivals = arrival_process::poisson;
  /// Requests per second, or (when `load` is set instead) that fraction of the fleet's
  /// capacity as capacity_req_s() estimates it.
  std::optional<double> rate;
  std::optional<double> load;
  std::size_t requests = 1000;
  bench::serve::length_dist prompt;
  bench::serve::length_dist output;
  double burst_s = 1;
  double idle_s = 1;
  /// JSON lines {"at_s": 0.5, "prompt_tokens": 200, "output_tokens": 64} (optional
  /// "prefix_group"), times non-decreasing; relative paths are from the workload file.
  std::filesystem::path trace;
  /// Requests draw one of `prefix_groups` groups; each group's prompts start with the same
  /// `prefix_tokens` tokens (a system prompt). 0: every prompt is its own.
  std::size_t prefix_groups = 0;
  std::size_t prefix_tokens = 0;
  std::uint64_t seed = 1;
  std::optional<double> slo_ttft_ms;
  std::optional<double> slo_tpot_ms;
};

/// One request to send.
struct planned_request {
  double at_s = 0;
  std::uint32_t prompt_tokens = 0;
  std::uint32_t output_tokens = 0;
  std::uint32_t prefix_group = 0;  ///< meaningful when the workload has prefix groups
};

/// Parses a workload file. errc::invalid_argument "file:line:column: key: ..." for
/// malformed TOML, an unknown or missing key, a value out of range or a bad distribution.
[[nodiscard]] expected<workload_spec> parse_workload(std::string_view text,
                                                     const std::filesystem::path& file);
[[nodiscard]] expected<workload_spec> load_workload(const std::filesystem::path& file);

/// The requests of `w`, seeded by w.seed, at `rate_per_s` (ignored for a trace).
/// errc::invalid_argument "trace:line: ..." for a bad trace line; not_found for a missing
/// trace.
[[nodiscard]] expected<std::vector<planned_request>> plan_requests(const workload_spec& w,
                                                                   double rate_per_s);

/// A trace line for `r` (what plan_requests reads back).
[[nodiscard]] std::string trace_line(const planned_request& r);

}  // namespace baton::sim
