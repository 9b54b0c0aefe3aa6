// `baton sim --topology FILE --workload FILE [--json] [--plot FILE.svg] [--sweep LOADS]`:
// simulates a fleet serving a workload with Baton's own router (sim/simulator.hpp) and
// prints TTFT, TPOT, ITL and end-to-end percentiles, throughput, goodput and per-group
// utilisation. `baton sim gen --prefill N --decode N ...` writes a fleet file.
// docs/simulator.md.
#include <sys/resource.h>

#include <fstream>
#include <sstream>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/serve_load.hpp"
#include "report/plot.hpp"
#include "report/progress.hpp"
#include "sim/simulator.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

struct sim_args {
  std::string topology;
  std::string workload;
  bool json = false;
  std::string plot;
  std::vector<double> sweep;
  std::string trace_out;
  std::size_t segment_steps = 256;
};

double peak_rss_mib() {
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;  // KiB on Linux
}

std::string fleet_line(const sim::fleet_spec& f) {
  std::string groups;
  for (const auto& g : f.groups) {
    groups += fmt::format("{}{} {} {} ({})", groups.empty() ? "" : ", ", g.count, g.name,
                          g.hardware.name, f.links[g.link].name);
  }
  return fmt::format("{}; {} router{}; {}", groups, f.routers, f.routers == 1 ? "" : "s",
                     f.shape.name);
}

nlohmann::json summary_json(const report::summary& s) {
  return {{"mean", s.mean}, {"p50", s.p50}, {"p90", s.p90}, {"p99", s.p99}, {"count", s.count}};
}

nlohmann::json report_json(const sim::sim_report& r, double load) {
  nlohmann::json groups = nlohmann::json::array();
  for (const auto& g : r.groups) {
    groups.push_back({{"name", g.name},
                      {"role", g.role == wire::role::prefill ? "prefill" : "decode"},
                      {"nodes", g.nodes},
                      {"busy_mean", g.busy_mean},
                      {"busy_max", g.busy_max},
                      {"kv_mean", g.kv_mean},
                      {"kv_peak", g.kv_peak}});
  }
  nlohmann::json j = {{"requests", r.requests},
                      {"completed", r.completed},
                      {"errors", r.errors},
                      {"offered_req_s", r.offered_req_s},
                      {"capacity_req_s", r.capacity_req_s},
                      {"load", load},
                      {"ttft_ms", summary_json(r.ttft_ms)},
                      {"tpot_ms", summary_json(r.tpot_ms)},
                      {"itl_ms", summary_json(r.itl_ms)},
                      {"e2e_ms", summary_json(r.e2e_ms)},
                      {"duration_s", r.duration_s},
                      {"request_throughput_req_s", r.request_throughput_req_s},
                      {"output_throughput_tok_s", r.output_throughput_tok_s},
                      {"retries", r.retries},
                      {"migrations", r.migrations},
                      {"waited", r.waited},
                      {"node_deaths", r.node_deaths},
                      {"events", r.events},
                      {"wall_s", r.wall_s},
                      {"peak_rss_mib", peak_rss_mib()},
                      {"groups", groups}};
  if (r.goodput_req_s) j["goodput_req_s"] = *r.goodput_req_s;
  if (r.goodput_fraction) j["goodput_fraction"] = *r.goodput_fraction;
  return j;
}

void print_report(const sim::sim_report& r) {
  fmt::print("simulated {:.1f} s in {:.1f} s ({:.1f}M events, peak memory {:.0f} MiB)\n",
             r.duration_s, r.wall_s, static_cast<double>(r.events) / 1e6, peak_rss_mib());
  fmt::print("{:<10} {:>10} {:>10} {:>10} {:>10}\n", "ms", "mean", "p50", "p90", "p99");
  for (const auto& [name, s] : {std::pair{"TTFT", r.ttft_ms}, std::pair{"TPOT", r.tpot_ms},
                                std::pair{"ITL", r.itl_ms}, std::pair{"E2E", r.e2e_ms}}) {
    fmt::print("{:<10} {:>10.2f} {:>10.2f} {:>10.2f} {:>10.2f}\n", name, s.mean, s.p50, s.p90,
               s.p99);
  }
  std::string errors;
  for (const auto& [code, n] : r.errors) errors += fmt::format(" {} {}", n, code);
  fmt::print("completed {}/{}{}; retries {}, migrations {}, waited {}, node deaths {}\n",
             r.completed, r.requests, errors.empty() ? "" : ", failed:" + errors, r.retries,
             r.migrations, r.waited, r.node_deaths);
  fmt::print("throughput {:.1f} req/s, {:.0f} output tok/s", r.request_throughput_req_s,
             r.output_throughput_tok_s);
  if (r.goodput_req_s) {
    fmt::print("; goodput {:.1f} req/s ({:.1f}% of requests meet the SLOs)", *r.goodput_req_s,
               100 * *r.goodput_fraction);
  }
  fmt::print("\n{:<12} {:<8} {:>8} {:>10} {:>10} {:>10} {:>10}\n", "group", "role", "nodes",
             "busy mean", "busy max", "kv mean", "kv peak");
  for (const auto& g : r.groups) {
    const bool decode = g.role == wire::role::decode;
    fmt::print("{:<12} {:<8} {:>8} {:>9.1f}% {:>9.1f}% {:>10} {:>10}\n", g.name,
               decode ? "decode" : "prefill", g.nodes, 100 * g.busy_mean, 100 * g.busy_max,
               decode ? fmt::format("{:.1f}%", 100 * g.kv_mean) : "-",
               decode ? fmt::format("{:.1f}%", 100 * g.kv_peak) : "-");
  }
}

int run_sim(const sim_args& a) {
  if (a.topology.empty() || a.workload.empty()) {
    fmt::print(stderr, "baton sim: --topology and --workload are required (or: baton sim gen)\n");
    return 2;
  }
  auto fleet = sim::load_fleet(a.topology);
  if (!fleet) {
    fmt::print(stderr, "baton sim: {}\n", fleet.error().message);
    return 1;
  }
  auto workload = sim::load_workload(a.workload);
  if (!workload) {
    fmt::print(stderr, "baton sim: {}\n", workload.error().message);
    return 1;
  }
  if (!a.sweep.empty() && workload->arrivals == sim::arrival_process::trace) {
    fmt::print(stderr, "baton sim: --sweep needs generated arrivals, not a trace\n");
    return 2;
  }
  // Lengths do not depend on the rate: plan once for them and the capacity, then at the rate.
  auto lengths = sim::plan_requests(*workload, 1.0);
  if (!lengths) {
    fmt::print(stderr, "baton sim: {}\n", lengths.error().message);
    return 1;
  }
  auto capacity = sim::capacity_req_s(*fleet, *workload, *lengths);
  if (!capacity) {
    fmt::print(stderr, "baton sim: {}\n", capacity.error().message);
    return 1;
  }
  std::vector<double> loads = a.sweep;
  if (loads.empty()) {
    loads.push_back(workload->load   ? *workload->load
                    : workload->rate ? *workload->rate / *capacity
                                     : 0.0);
  }
  if (!a.json) {
    fmt::print("baton sim: {} ({}), {}\n", a.topology, fleet_line(*fleet), a.workload);
    fmt::print(
        "seed {}; estimated capacity {:.2f} req/s; every node time is modelled "
        "(engine/profiles.toml), the routers are Baton's router_state\n",
        workload->seed, *capacity);
  }
  sim::sim_options options;
  options.segment_steps = a.segment_steps;
  options.progress = report::progress_bar("requests ended", a.json);
  std::vector<std::pair<double, sim::sim_report>> runs;
  for (const double load : loads) {
    const double rate = workload->arrivals == sim::arrival_process::trace ? 0 : load * *capacity;
    const bool trace = workload->arrivals == sim::arrival_process::trace;
    auto plan = trace ? expected<std::vector<sim::planned_request>>(*lengths)
                      : sim::plan_requests(*workload, rate);
    if (!plan) {
      fmt::print(stderr, "baton sim: {}\n", plan.error().message);
      return 1;
    }
    if (!a.trace_out.empty()) {
      std::ofstream out(a.trace_out);
      for (const auto& r : *plan) out << sim::trace_line(r) << '\n';
    }
    if (!a.json && trace) {
      fmt::print("\n{} requests from the trace\n", plan->size());
    } else if (!a.json) {
      fmt::print("\n{} requests, {} at {:.2f} req/s ({:.0f}% of capacity)\n", plan->size(),
                 workload->arrivals == sim::arrival_process::bursty ? "bursty" : "Poisson", rate,
                 100 * load);
    }
    auto r = sim::simulate(*fleet, *workload, *plan, options);
    if (!r) {
      fmt::print(stderr, "baton sim: {}\n", r.error().message);
      return 1;
    }
    if (a.json) {
      fmt::print("{}\n", report_json(*r, load).dump());
    } else {
      print_report(*r);
    }
    runs.emplace_back(load, std::move(*r));
  }
  if (!a.plot.empty()) {
    const auto& [load, r] = runs.back();
    std::vector<report::panel> panels = {
        bench::serve::cdf_panel("panel-ttft", "TTFT (time to first token)", r.ttft_samples_ms,
                                r.ttft_ms, workload->slo_ttft_ms),
        bench::serve::cdf_panel("panel-tpot", "TPOT (time per output token)", r.tpot_samples_ms,
                                r.tpot_ms, workload->slo_tpot_ms),
        bench::serve::cdf_panel("panel-itl", "ITL (inter-token latency)", r.itl_quantiles_ms,
                                r.itl_ms, std::nullopt),
        bench::serve::cdf_panel("panel-e2e", "E2E (end-to-end latency)", r.e2e_samples_ms, r.e2e_ms,
                                std::nullopt)};
    if (runs.size() > 1) {
      report::panel p{.id = "panel-throughput",
                      .title = "Throughput against offered rate",
                      .x_label = "offered req/s",
                      .y_label = "req/s"};
      report::line done{.color = "#1f77b4", .label = "completed"};
      report::line good{.color = "#2ca02c", .label = "goodput"};
      for (const auto& [l, run] : runs) {
        done.points.emplace_back(run.offered_req_s, run.request_throughput_req_s);
        if (run.goodput_req_s) good.points.emplace_back(run.offered_req_s, *run.goodput_req_s);
      }
      p.lines.push_back(std::move(done));
      if (!good.points.empty()) p.lines.push_back(std::move(good));
      panels.push_back(std::move(p));
    }
    std::ofstream out(a.plot);
    out << report::render_figure(fmt::format("baton sim (modelled): {} at {:.0f}% of capacity",
                                             fleet_line(*fleet), 100 * load),
                                 panels);
    if (!out) {
      fmt::print(stderr, "baton sim: cannot write {}\n", a.plot);
      return 1;
    }
  }
  return 0;
}

/// Half the round trip of the first Baton line of `baton bench actors --json`'s output.
expected<double> message_us_from(const std::string& file) {
  std::ifstream in(file);
  if (!in) return fail(errc::not_found, file + ": cannot be read");
  std::string line;
  for (std::size_t number = 1; std::getline(in, line); ++number) {
    const auto j = nlohmann::json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("transport") && j.contains("rtt_us_p50") &&
        j["transport"].is_string() && j["transport"].get<std::string>().starts_with("baton") &&
        j["rtt_us_p50"].is_number()) {
      return j["rtt_us_p50"].get<double>() / 2;
    }
  }
  return fail(errc::invalid_argument,
              file +
                  ": no line {\"transport\": \"baton...\", \"rtt_us_p50\": ...} (the output of "
                  "baton bench actors --json)");
}

}  // namespace

void add_sim_command(CLI::App& app, int& exit_code) {
  static sim_args args;
  auto* cmd = app.add_subcommand("sim", "Simulate a fleet serving a workload with Baton's router");
  cmd->add_option("--topology", args.topology, "Fleet file (baton sim gen writes one)");
  cmd->add_option("--workload", args.workload, "Workload file (docs/simulator.md)");
  cmd->add_flag("--json", args.json, "Print one JSON object per run");
  cmd->add_option("--plot", args.plot,
                  "Write latency CDFs (and throughput against rate) to FILE.svg");
  cmd->add_option("--sweep", args.sweep, "Run at each of these loads (fractions of capacity)")
      ->delimiter(',');
  cmd->add_option("--trace-out", args.trace_out, "Write the requests sent as a JSON-lines trace");
  cmd->add_option("--segment-steps", args.segment_steps,
                  "Decode steps one event advances at most (1: every step)")
      ->check(CLI::Range(1, 1 << 20))
      ->capture_default_str();
  cmd->callback([&exit_code, cmd] {
    if (cmd->get_subcommands().empty()) exit_code = run_sim(args);
  });

  static sim::gen_options gen;
  static std::string out_file;
  static std::string actors_json;
  auto* g = cmd->add_subcommand("gen", "Write a fleet file");
  g->add_option("--prefill", gen.prefill, "Prefill nodes")->capture_default_str();
  g->add_option("--decode", gen.decode, "Decode nodes")->capture_default_str();
  g->add_option("--profile-prefill", gen.profile_prefill, "Prefill hardware profile")
      ->capture_default_str();
  g->add_option("--profile-decode", gen.profile_decode, "Decode hardware profile")
      ->capture_default_str();
  g->add_option("--model", gen.shape, "Model shape (engine/profiles.toml)")->capture_default_str();
  g->add_option("--link", gen.link, "efa, 400gbe, 100gbe or loopback")->capture_default_str();
  g->add_option("--routers", gen.routers, "Routers")->capture_default_str();
  g->add_option("--max-batch", gen.decode_max_batch, "Sequences per decode step")
      ->capture_default_str();
  g->add_option("--kv-blocks", gen.decode_kv_blocks,
                "KV blocks per decode node (default: max-batch sequences of the full context)");
  g->add_option("--block-tokens", gen.block_tokens, "Positions per KV block")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  g->add_option("--kv-scale", gen.kv_scale, "KV bytes moved = real / this (emulated clusters)")
      ->capture_default_str();
  g->add_option("--message-us", gen.message_us, "One hop's fixed cost in the runtime")
      ->capture_default_str();
  g->add_option("--actors-json", actors_json,
                "Take --message-us from `baton bench actors --json` output (half its RTT p50)");
  g->add_option("--time-scale", gen.time_scale, "Modelled times x this")->capture_default_str();
  g->add_option("--deaths-per-hour", gen.node_deaths_per_hour, "Node deaths per node-hour")
      ->capture_default_str();
  g->add_option("-o,--output", out_file, "Write here instead of stdout");
  g->callback([&exit_code] {
    if (!actors_json.empty()) {
      auto us = message_us_from(actors_json);
      if (!us) {
        fmt::print(stderr, "baton sim gen: {}\n", us.error().message);
        exit_code = 1;
        return;
      }
      gen.message_us = *us;
    }
    auto text = sim::generate_fleet(gen);
    if (!text) {
      fmt::print(stderr, "baton sim gen: {}\n", text.error().message);
      exit_code = 1;
      return;
    }
    if (out_file.empty()) {
      fmt::print("{}", *text);
      return;
    }
    std::ofstream out(out_file);
    out << *text;
    if (!out) {
      fmt::print(stderr, "baton sim gen: cannot write {}\n", out_file);
      exit_code = 1;
    }
  });
}

}  // namespace baton::tools
