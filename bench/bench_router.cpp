// `baton bench router [--rate R] [--requests N] [--clients C] [--prompt-len L]
// [--output-len K] [--seed S] [--json]`: the latency the router adds to each request, at an
// open-loop Poisson rate, on a local cluster whose workers run the emulated engine with
// zero compute time (a router, a Trainium-kind prefill node and a wafer-scale-kind decode
// node, real `baton node` processes on 127.0.0.1), so what is left is the serving path.
// The router measures each request's time inside its process (wire::finished::router_us:
// while some message of the request is there, from the router taking it off its socket or
// transport to handing what it caused on) and reports it in the request's `finished`; the
// client's
// end-to-end latency is printed beside it. Figures only; no assertions. BATON_KEEP=1 keeps
// the cluster's folder (topology and node logs).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/commands.hpp"
#include "bench/serve_load.hpp"
#include "client/router_client.hpp"
#include "launcher/local_cluster.hpp"
#include "runtime/topology.hpp"

namespace baton::bench {
namespace {

using launcher::local_cluster;

using clock_type = std::chrono::steady_clock;

struct router_args {
  double rate = 2000;
  std::size_t requests = 10'000;
  std::size_t warmup = 1'000;
  std::size_t clients = 16;
  std::size_t prompt_len = 16;
  std::uint32_t output_len = 1;
  std::uint64_t seed = 0;
  std::string model = "stories260K.bin";  // names: looked up in the model search path
  std::string tokenizer = "tok512.bin";
  bool json = false;
};

/// What one request gave.
struct sample {
  double router_us = 0;
  double e2e_us = 0;
  double late_us = 0;  ///< how long after its scheduled time the request was sent
};

/// Runs `count` requests at `rate` (seeded Poisson arrivals) over `clients` connections.
/// Requests that fail are counted in `failures` (with the first error in `first_error`).
std::vector<sample> run_load(const router_args& a, const std::string& native, std::size_t count,
                             std::uint64_t seed, std::size_t& failures, std::string& first_error) {
  const auto schedule = serve::poisson_schedule_s(a.rate, count, seed);
  std::vector<sample> samples(count);
  std::vector<char> ok(count, 0);  // not vector<bool>: threads set neighbouring entries
  std::atomic<std::size_t> next{0};
  std::mutex mutex;
  std::mt19937_64 words(seed);
  const std::string prompt = serve::synthetic_prompt(a.prompt_len, words);
  const auto start = clock_type::now() + std::chrono::milliseconds(50);
  std::vector<std::thread> threads;
  for (std::size_t c = 0; c < a.clients; ++c) {
    threads.emplace_back([&] {
      client::client_options co;
      co.routers = {native};
      auto client = client::router_client::connect(co);
      const auto failed = [&](const error& e) {
        std::lock_guard lock(mutex);
        if (failures++ == 0) first_error = e.to_string();
      };
      wire::generate_request req;
      req.prompt = prompt;
      req.max_tokens = a.output_len;
      req.params = {0.0f, 1.0f, 1};
      req.has_seed = true;
      for (std::size_t i = next++; i < count; i = next++) {
        const auto due = start + std::chrono::duration_cast<clock_type::duration>(
                                     std::chrono::duration<double>(schedule[i]));
        std::this_thread::sleep_until(due);
        const auto sent = clock_type::now();
        if (!client) {
          failed(client.error());
          continue;
        }
        auto result = (*client)->generate(req, [](const client::client_event&) { return true; });
        if (!result) {
          failed(result.error());
          continue;
        }
        const auto done = clock_type::now();
        samples[i] = sample{static_cast<double>(result->router_us),
                            std::chrono::duration<double, std::micro>(done - sent).count(),
                            std::chrono::duration<double, std::micro>(sent - due).count()};
        ok[i] = 1;
      }
    });
  }
  for (auto& t : threads) t.join();
  std::vector<sample> good;
  for (std::size_t i = 0; i < count; ++i) {
    if (ok[i]) good.push_back(samples[i]);
  }
  return good;
}

/// One figure of every sample, sorted (for report::percentile()).
std::vector<double> field(const std::vector<sample>& s, double sample::*member) {
  std::vector<double> out;
  out.reserve(s.size());
  for (const auto& x : s) out.push_back(x.*member);
  std::sort(out.begin(), out.end());
  return out;
}

/// The figures of a run of `samples` over `seconds`.
nlohmann::json figures_of(const router_args& a, const std::vector<sample>& samples, double seconds,
                          std::size_t failures, std::uint64_t seed) {
  const auto router_us = field(samples, &sample::router_us);
  const auto e2e_us = field(samples, &sample::e2e_us);
  const auto late_us = field(samples, &sample::late_us);
  return {{"rate", a.rate},
          {"requests", samples.size()},
          {"overhead_us_p50", report::percentile(router_us, 50)},
          {"overhead_us_p99", report::percentile(router_us, 99)},
          {"overhead_us_p90", report::percentile(router_us, 90)},
          {"e2e_us_p50", report::percentile(e2e_us, 50)},
          {"e2e_us_p99", report::percentile(e2e_us, 99)},
          {"send_late_us_p99", report::percentile(late_us, 99)},
          {"achieved_rate", static_cast<double>(samples.size()) / seconds},
          {"failed", failures},
          {"output_len", a.output_len},
          {"prompt_len", a.prompt_len},
          {"seed", seed},
          {"placement", "disaggregated"},
          {"device", "emulated engine, zero compute time (not accelerator hardware)"},
          {"transport", "libfabric tcp on 127.0.0.1"}};
}

void print_table(const router_args& a, const nlohmann::json& out) {
  fmt::print(
      "router overhead at {:.0f} req/s ({} requests, {} failed; {:.0f} req/s achieved), "
      "emulated workers with zero compute\n",
      a.rate, out["requests"].get<std::size_t>(), out["failed"].get<std::size_t>(),
      out["achieved_rate"].get<double>());
  fmt::print("  time inside the router   p50 {:8.1f} us   p90 {:8.1f} us   p99 {:8.1f} us\n",
             out["overhead_us_p50"].get<double>(), out["overhead_us_p90"].get<double>(),
             out["overhead_us_p99"].get<double>());
  fmt::print("  client end to end        p50 {:8.1f} us   p99 {:8.1f} us\n",
             out["e2e_us_p50"].get<double>(), out["e2e_us_p99"].get<double>());
}

int run_router(const router_args& a) {
  const auto fail_with = [](const std::string& what) {
    fmt::print(stderr, "baton bench router: {}\n", what);
    return 1;
  };
  if (!(a.rate > 0) || a.requests == 0 || a.clients == 0 || a.output_len == 0 || a.prompt_len < 2) {
    return fail_with(
        "--rate, --requests, --clients and --output-len must be positive and "
        "--prompt-len at least 2");
  }
  const std::uint64_t seed = a.seed != 0 ? a.seed : std::random_device{}();
  fmt::print(stderr, "seed {} (replay with --seed {})\n", seed, seed);
  auto cluster = serving_path_cluster("bench-router", a.model, a.tokenizer);
  if (!cluster) return fail_with(cluster.error().message);
  auto& c = **cluster;
  std::size_t failures = 0;
  std::string first_error;
  if (a.warmup > 0)
    (void)run_load(a, c.native("router-0"), a.warmup, seed + 1, failures, first_error);
  failures = 0;
  const auto begin = clock_type::now();
  const auto samples = run_load(a, c.native("router-0"), a.requests, seed, failures, first_error);
  const double seconds = std::chrono::duration<double>(clock_type::now() - begin).count();
  if (samples.empty()) return fail_with("no request succeeded: " + first_error);

  auto out = figures_of(a, samples, seconds, failures, seed);
  if (failures > 0) out["first_error"] = first_error;
  if (!a.json) print_table(a, out);
  fmt::print("{}\n", out.dump());
  return 0;
}

}  // namespace

expected<std::unique_ptr<local_cluster>> serving_path_cluster(const std::string& name,
                                                              const std::string& model_name,
                                                              const std::string& tokenizer_name) {
  const auto here = std::filesystem::current_path();
  const auto model = runtime::model_file(model_name, here);
  const auto tokenizer = runtime::model_file(tokenizer_name, here);
  for (const auto& file : {model, tokenizer}) {
    if (!std::filesystem::is_regular_file(file)) {
      return fail(
          errc::not_found,
          fmt::format("no {} (names are looked up in BATON_MODEL_PATH, ./models, ../shared/models)",
                      file.string()));
    }
  }
  auto c = std::make_unique<local_cluster>(launcher::local_cluster_options{
      .name = name,
      .checkpoint = model,
      .tokenizer = tokenizer,
      .nodes = {{"router-0", {"router"}},
                {"prefill-0", {"prefill"}, "trainium", "emulated:trn2", "kv_blocks = 4096"},
                {"decode-0", {"decode"}, "wafer-scale", "emulated:cs3", "kv_blocks = 4096"}},
      .sections = "[emulated]\ntime_scale = 0    # zero compute: only the serving path\n\n"
                  "[limits]\nmax_queued_requests = 4096\n"});
  if (auto ok = c->start_all(); !ok) return tl::unexpected(ok.error());
  if (auto ok = c->ready(std::chrono::seconds(30)); !ok) {
    return fail(ok.error().code, "the cluster did not become ready: " + ok.error().message);
  }
  return c;
}

void add_bench_router_command(CLI::App& app, int& exit_code) {
  static router_args args;
  auto* cmd = bench_command(app).add_subcommand(
      "router", "Latency the router adds per request, against emulated zero-compute workers");
  cmd->add_option("--rate", args.rate, "Requests per second (Poisson arrivals)")
      ->capture_default_str();
  cmd->add_option("--requests", args.requests, "Measured requests")->capture_default_str();
  cmd->add_option("--warmup", args.warmup, "Requests before measuring")->capture_default_str();
  cmd->add_option("--clients", args.clients, "Client connections sending")->capture_default_str();
  cmd->add_option("--prompt-len", args.prompt_len, "Prompt tokens, about")->capture_default_str();
  cmd->add_option("--output-len", args.output_len, "Tokens generated per request")
      ->capture_default_str();
  cmd->add_option("--seed", args.seed, "Arrival schedule seed (0: random, printed)");
  cmd->add_option("--model", args.model, "Checkpoint (its shape and vocabulary)")
      ->capture_default_str();
  cmd->add_option("--tokenizer", args.tokenizer, "Tokenizer")->capture_default_str();
  cmd->add_flag("--json", args.json, "Print only the JSON line");
  cmd->callback([&exit_code] { exit_code = run_router(args); });
}

}  // namespace baton::bench
