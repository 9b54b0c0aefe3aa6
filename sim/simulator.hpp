#pragma once

// A discrete-event simulation of a fleet serving a workload. The routers are Baton's own
// actors::router_state, driven by simulated time: placement, waiting, deadlines, retries
// and migrations after node deaths are the real code's. The nodes are models: a prefill
// node computes one prompt at a time for the time its hardware profile predicts
// (engine/roofline.hpp) and ships the KV over its link, pipelined with the compute; a
// decode node runs continuous batches of up to max_batch sequences, each step as long as
// the profile predicts for the batch's contexts. Messages pay the runtime's per-hop cost
// and both ends' link latency. Single-threaded and deterministic: equal inputs give equal
// reports.
//
// What is aggregated, for speed (docs/simulator.md "Model"): a decode node advances its
// batch up to `segment_steps` steps in one event while the batch does not change (a
// sequence that joins cuts the segment at the next step boundary), and sends each
// sequence's tokens of a segment in one message; every token's time is still its own
// step's end. Stream windows are not simulated (clients read at once).

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "report/stats.hpp"
#include "sim/fleet.hpp"
#include "sim/workload.hpp"

namespace baton::sim {

/// Per group: how busy its devices were and how full the decode nodes' KV.
struct group_usage {
  std::string name;
  wire::role role = wire::role::decode;
  std::size_t nodes = 0;
  double busy_mean = 0;  ///< fraction of the run a device computed, mean over the nodes
  double busy_max = 0;
  double kv_mean = 0;  ///< decode: KV blocks held / kv_blocks, time-averaged, mean over nodes
  double kv_peak = 0;  ///< decode: the highest fraction any node reached
};

struct sim_report {
  std::size_t requests = 0;
  std::size_t completed = 0;
  std::map<std::string, std::size_t> errors;  ///< failed requests, by error code
  report::summary ttft_ms, tpot_ms, itl_ms, e2e_ms;
  /// For plots: per-request samples, and ITL as quantiles (its samples are aggregated).
  std::vector<double> ttft_samples_ms, tpot_samples_ms, e2e_samples_ms, itl_quantiles_ms;
  double duration_s = 0;  ///< first arrival to last completion, simulated
  double offered_req_s = 0;
  double capacity_req_s = 0;  ///< capacity_req_s()'s estimate
  double request_throughput_req_s = 0;
  double output_throughput_tok_s = 0;
  std::optional<double> goodput_req_s;     ///< with an SLO: good requests / duration
  std::optional<double> goodput_fraction;  ///< good requests / requests
  std::vector<group_usage> groups;
  std::uint64_t retries = 0;     ///< the routers' (router_stats::retries)
  std::uint64_t migrations = 0;  ///< requests moved off a failed worker, every cause
  std::uint64_t waited = 0;      ///< requests that waited for a worker
  std::uint64_t node_deaths = 0;
  std::uint64_t events = 0;  ///< simulation events processed
  double wall_s = 0;         ///< real time the simulation took
};

struct sim_options {
  /// Decode steps a node advances in one event at most (1: every step its own event).
  std::size_t segment_steps = 256;
  /// Called now and then with (requests ended, requests) while the simulation runs.
  std::function<void(std::size_t, std::size_t)> progress;
};

/// Requests per second the fleet sustains for `w`'s mean lengths: the smaller of the
/// prefill nodes' (one prompt at a time) and the decode nodes' (max_batch sequences per
/// step, fewer when their KV blocks run out). errc::invalid_argument "cannot be served:
/// ..." when no decode node can hold a request of the mean lengths or a trace's longest.
[[nodiscard]] expected<double> capacity_req_s(const fleet_spec& fleet, const workload_spec& w,
                                              const std::vector<planned_request>& plan);

/// Runs `plan` on `fleet`. errc::invalid_argument "cannot be served: ..." when a request
/// cannot fit any decode node or the model's context (before anything runs).
[[nodiscard]] expected<sim_report> simulate(const fleet_spec& fleet, const workload_spec& w,
                                            const std::vector<planned_request>& plan,
                                            const sim_options& options = {});

}  // namespace baton::sim
