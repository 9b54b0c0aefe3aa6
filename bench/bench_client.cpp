// `baton bench client [--requests N] [--output-len K] [--seed S] [--json]`: the router
// client's two ways of running many requests, side by side in one run against the same
// local cluster (bench router's: emulated workers with zero compute, so what is measured
// is the serving path): one client multiplexing every request over one connection
// (start(), callbacks) against as many blocking clients as requests in flight, each with
// its own connection (generate() on its own thread). At 1, 16 and 64 requests in flight
// (closed loop: each finished request starts the next), it prints throughput and the time
// to first token, p50 and p99, from the call to the first token's arrival. Figures only;
// no assertions.
#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <cstdio>
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
#include "report/stats.hpp"

namespace baton::bench {
namespace {

using clock_type = std::chrono::steady_clock;

struct client_args {
  std::size_t requests = 0;  ///< per point and way; 0: 32 per request in flight, at least 256
  std::size_t warmup = 64;
  std::uint32_t output_len = 16;
  std::size_t prompt_len = 16;
  std::uint64_t seed = 0;
  std::string model = "stories260K.bin";
  std::string tokenizer = "tok512.bin";
  bool json = false;
};

/// What one way of running `requests` requests with `in_flight` at a time gave.
struct run_figures {
  std::vector<double> ttft_us;  ///< sorted
  double seconds = 0;
  std::size_t failed = 0;
  std::string first_error;
  std::uint64_t tokens = 0;
};

/// Times of one request, on whichever thread sees them.
struct timing {
  clock_type::time_point sent;
  clock_type::time_point first_token;
  bool have_first = false;
};

/// Thread-safe accumulation of finished requests.
class tally {
 public:
  void add(const expected<client::generate_result>& r, const timing& t) {
    std::lock_guard lock(mutex_);
    if (!r || !t.have_first) {
      if (figures_.failed++ == 0) {
        figures_.first_error = r ? "a request finished with no token" : r.error().to_string();
      }
    } else {
      figures_.ttft_us.push_back(
          std::chrono::duration<double, std::micro>(t.first_token - t.sent).count());
      figures_.tokens += r->completion_tokens;
    }
    ++ended_;
    changed_.notify_all();
  }
  void wait_for(std::size_t n) {
    std::unique_lock lock(mutex_);
    changed_.wait(lock, [&] { return ended_ >= n; });
  }
  run_figures take(double seconds) {
    std::lock_guard lock(mutex_);
    std::sort(figures_.ttft_us.begin(), figures_.ttft_us.end());
    figures_.seconds = seconds;
    return std::move(figures_);
  }

 private:
  std::mutex mutex_;
  std::condition_variable changed_;
  run_figures figures_;
  std::size_t ended_ = 0;
};

wire::generate_request request_of(const client_args& a, const std::string& prompt) {
  wire::generate_request r;
  r.prompt = prompt;
  r.max_tokens = a.output_len;
  r.params = {0.0f, 1.0f, 1};
  r.has_seed = true;
  return r;
}

/// One client, `in_flight` requests at a time over its one connection.
run_figures multiplexed(const client_args& a, const std::string& router, const std::string& prompt,
                        std::size_t in_flight, std::size_t count) {
  client::client_options co;
  co.routers = {router};
  auto connected = client::router_client::connect(co);
  run_figures failed;
  if (!connected) {
    failed.failed = count;
    failed.first_error = connected.error().to_string();
    return failed;
  }
  auto& client = **connected;
  tally done;
  std::atomic<std::size_t> started{0};
  std::vector<timing> times(count);
  // Starts request i; its end starts the next (on the client's I/O thread).
  std::function<void(std::size_t)> start = [&](std::size_t i) {
    times[i].sent = clock_type::now();
    (void)client.start(
        request_of(a, prompt),
        [&times, i](const client::client_event& e) {
          if (!times[i].have_first && std::holds_alternative<wire::token_chunk>(e)) {
            times[i].first_token = clock_type::now();
            times[i].have_first = true;
          }
          return true;
        },
        [&, i](expected<client::generate_result> r) {
          done.add(r, times[i]);
          if (const auto next = started++; next < count) start(next);
        });
  };
  const auto begin = clock_type::now();
  for (std::size_t i = 0; i < in_flight && i < count; ++i) start(started++);
  done.wait_for(count);
  return done.take(std::chrono::duration<double>(clock_type::now() - begin).count());
}

/// `in_flight` blocking clients, each with its own connection and thread.
run_figures blocking(const client_args& a, const std::string& router, const std::string& prompt,
                     std::size_t in_flight, std::size_t count) {
  tally done;
  std::atomic<std::size_t> next{0};
  std::vector<std::unique_ptr<client::router_client>> clients;
  for (std::size_t c = 0; c < in_flight; ++c) {
    client::client_options co;
    co.routers = {router};
    auto connected = client::router_client::connect(co);
    clients.push_back(connected ? std::move(*connected) : nullptr);
  }
  const auto begin = clock_type::now();
  std::vector<std::thread> threads;
  for (auto& client : clients) {
    threads.emplace_back([&] {
      for (auto i = next++; i < count; i = next++) {
        timing t;
        t.sent = clock_type::now();
        if (!client) {
          done.add(fail(errc::disconnected, "the client did not connect"), t);
          continue;
        }
        auto r = client->generate(request_of(a, prompt), [&t](const client::client_event& e) {
          if (!t.have_first && std::holds_alternative<wire::token_chunk>(e)) {
            t.first_token = clock_type::now();
            t.have_first = true;
          }
          return true;
        });
        done.add(r, t);
      }
    });
  }
  for (auto& t : threads) t.join();
  return done.take(std::chrono::duration<double>(clock_type::now() - begin).count());
}

nlohmann::json json_of(const run_figures& f) {
  const auto ok = static_cast<double>(f.ttft_us.size());
  nlohmann::json j{{"requests", f.ttft_us.size()},
                   {"failed", f.failed},
                   {"requests_per_s", ok / f.seconds},
                   {"tokens_per_s", static_cast<double>(f.tokens) / f.seconds},
                   {"ttft_us_p50", report::percentile(f.ttft_us, 50)},
                   {"ttft_us_p99", report::percentile(f.ttft_us, 99)}};
  if (f.failed > 0) j["first_error"] = f.first_error;
  return j;
}

int run_client(const client_args& a) {
  const auto fail_with = [](const std::string& what) {
    fmt::print(stderr, "baton bench client: {}\n", what);
    return 1;
  };
  if (a.output_len == 0 || a.prompt_len < 2) {
    return fail_with("--output-len must be positive and --prompt-len at least 2");
  }
  const std::uint64_t seed = a.seed != 0 ? a.seed : std::random_device{}();
  fmt::print(stderr, "seed {} (replay with --seed {})\n", seed, seed);
  auto cluster = serving_path_cluster("bench-client", a.model, a.tokenizer);
  if (!cluster) return fail_with(cluster.error().message);
  const auto router = (*cluster)->native("router-0");
  std::mt19937_64 words(seed);
  const std::string prompt = serve::synthetic_prompt(a.prompt_len, words);
  (void)multiplexed(a, router, prompt, 8, a.warmup);  // connections, caches, the JIT of it all
  (void)blocking(a, router, prompt, 8, a.warmup);

  nlohmann::json points = nlohmann::json::array();
  for (const std::size_t in_flight : {1, 16, 64}) {
    const std::size_t count =
        a.requests > 0 ? a.requests : std::max<std::size_t>(256, 32 * in_flight);
    fmt::print(stderr, "{} in flight: {} requests each way\n", in_flight, count);
    points.push_back({{"in_flight", in_flight},
                      {"one_connection", json_of(multiplexed(a, router, prompt, in_flight, count))},
                      {"connection_each", json_of(blocking(a, router, prompt, in_flight, count))}});
  }
  const nlohmann::json out{
      {"points", points},
      {"output_len", a.output_len},
      {"prompt_len", a.prompt_len},
      {"seed", seed},
      {"device", "emulated engine, zero compute time (not accelerator hardware)"},
      {"transport", "libfabric tcp on 127.0.0.1; clients over TCP to the router's native port"}};
  if (!a.json) {
    fmt::print(
        "router client: requests in flight over one connection (start(), callbacks) against as "
        "many blocking clients with a connection each (generate()); emulated workers with zero "
        "compute, {} tokens per request\n",
        a.output_len);
    fmt::print(
        "  in flight | one connection: req/s  TTFT p50  TTFT p99 | a connection each: "
        "req/s  TTFT p50  TTFT p99\n");
    for (const auto& p : points) {
      const auto& one = p["one_connection"];
      const auto& each = p["connection_each"];
      fmt::print("  {:>9} | {:>21.0f} {:>7.0f}us {:>7.0f}us | {:>24.0f} {:>7.0f}us {:>7.0f}us\n",
                 p["in_flight"].get<std::size_t>(), one["requests_per_s"].get<double>(),
                 one["ttft_us_p50"].get<double>(), one["ttft_us_p99"].get<double>(),
                 each["requests_per_s"].get<double>(), each["ttft_us_p50"].get<double>(),
                 each["ttft_us_p99"].get<double>());
    }
  }
  fmt::print("{}\n", out.dump());
  return 0;
}

}  // namespace

void add_bench_client_command(CLI::App& app, int& exit_code) {
  static client_args args;
  auto* cmd = bench_command(app).add_subcommand(
      "client",
      "Requests multiplexed over one client connection against a blocking client each, at 1, "
      "16 and 64 in flight");
  cmd->add_option("--requests", args.requests,
                  "Requests per point and way (0: 32 per request in flight, at least 256)")
      ->capture_default_str();
  cmd->add_option("--warmup", args.warmup, "Requests each way before measuring")
      ->capture_default_str();
  cmd->add_option("--prompt-len", args.prompt_len, "Prompt tokens, about")->capture_default_str();
  cmd->add_option("--output-len", args.output_len, "Tokens generated per request")
      ->capture_default_str();
  cmd->add_option("--seed", args.seed, "Prompt seed (0: random, printed)");
  cmd->add_option("--model", args.model, "Checkpoint (its shape and vocabulary)")
      ->capture_default_str();
  cmd->add_option("--tokenizer", args.tokenizer, "Tokenizer")->capture_default_str();
  cmd->add_flag("--json", args.json, "Print only the JSON line");
  cmd->callback([&exit_code] { exit_code = run_client(args); });
}

}  // namespace baton::bench
