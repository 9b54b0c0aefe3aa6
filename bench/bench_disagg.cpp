// `baton bench disagg --model FILE [--tokenizer FILE] [--prompt-len N] [--runs R] [--json]`:
// in one run, the time to first token of one prompt computed in this process and on a local
// disaggregated cluster (a router, a Trainium-kind prefill node and a wafer-scale-kind
// decode node, real `baton node` processes on 127.0.0.1 moving the KV cache by libfabric
// RMA), and the KV transfer time the prefill node leaves exposed after its compute: with
// slices shipped as layers finish (exposed_ms) and with everything shipped after the
// compute (serial_ms, the same node restarted with --kv-after-compute). Medians of R runs
// after a warm-up, each cluster run right after the same prompt in this process so both
// see the same machine load. Figures only; no assertions. BATON_KEEP=1 keeps the
// cluster's folder (topology and node logs).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "bench/commands.hpp"
#include "client/router_client.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/model.hpp"
#include "engine/sampler.hpp"
#include "engine/tokenizer.hpp"
#include "launcher/local_cluster.hpp"

namespace baton::bench {
namespace {

using launcher::local_cluster;

using clock_type = std::chrono::steady_clock;

struct disagg_args {
  std::string model;
  std::string tokenizer = "../shared/models/tok512.bin";
  std::size_t prompt_len = 512;
  std::size_t runs = 3;
  bool json = false;
};

double ms_since(clock_type::time_point start) {
  return std::chrono::duration<double, std::milli>(clock_type::now() - start).count();
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

/// Prose whose encoding (BOS included) has at least `n` tokens.
std::string prompt_of(const engine::tokenizer& tok, std::size_t n) {
  static const char* words[] = {"the", "little", "dog", "ran", "to",   "a",  "big", "tree",
                                "and", "saw",    "one", "red", "bird", "in", "sun", "park"};
  std::string text;
  for (std::size_t i = 0; tok.encode(text, true, false).size() < n; ++i) {
    text += (text.empty() ? "" : " ") + std::string(words[(i * 7) % 16]);
  }
  return text;
}

/// One process, the same engine options as a prefill node: prefill plus the first token.
double single_ttft_ms(const engine::model& m, const std::vector<std::int32_t>& tokens) {
  engine::engine_options o;
  o.max_sequences = 1;
  auto eng = engine::cpu_engine::create(m, o);
  if (!eng) return 0;
  const auto start = clock_type::now();
  auto seq = (*eng)->add_sequence();
  auto logits = (*eng)->prefill(*seq, tokens);
  std::vector<float> copy(logits->begin(), logits->end());
  engine::sampler pick(0.0f, 1.0f, 1);
  (void)pick.sample(copy);
  const double ms = ms_since(start);
  (*eng)->remove_sequence(*seq);
  return ms;
}

struct phase {
  std::vector<double> single_ms;  ///< in this process, interleaved with the cluster runs
  std::vector<double> ttft_ms;
  std::vector<double> compute_ms;
  std::vector<double> exposed_ms;
};

/// Sends the prompt runs + 1 times (the first is a warm-up) for one token each, each run
/// after the same prompt's TTFT in this process, so both see the same machine load.
expected<phase> measure(const local_cluster& c, const engine::model& m,
                        const std::vector<std::int32_t>& tokens, const std::string& prompt,
                        std::size_t runs) {
  client::client_options co;
  co.routers = {c.native("router-0")};
  auto client = client::router_client::connect(co);
  if (!client) return tl::unexpected(client.error());
  phase p;
  for (std::size_t r = 0; r <= runs; ++r) {
    const double single = single_ttft_ms(m, tokens);
    wire::generate_request req;
    req.prompt = prompt;
    req.max_tokens = 1;
    req.params = {0.0f, 1.0f, 1};
    req.has_seed = true;
    const auto start = clock_type::now();
    double ttft = 0;
    auto result = (*client)->generate(req, [&](const client::client_event& e) {
      if (ttft == 0 && std::holds_alternative<wire::token_chunk>(e)) ttft = ms_since(start);
      return true;
    });
    if (!result) return tl::unexpected(result.error());
    if (r == 0) continue;
    p.single_ms.push_back(single);
    p.ttft_ms.push_back(ttft);
    p.compute_ms.push_back(c.metric("prefill-0", "baton_prefill_last_compute_seconds") * 1e3);
    p.exposed_ms.push_back(c.metric("prefill-0", "baton_prefill_last_kv_exposed_seconds") * 1e3);
  }
  return p;
}

/// The table of `out` (then the JSON line).
void print_table(const nlohmann::json& out) {
  const double single = out["ttft_ms_single"].get<double>();
  const double ttft_ratio = out["ttft_ms_disagg"].get<double>() / single;
  const double exposed_ratio =
      out["exposed_ms"].get<double>() / std::max(out["serial_ms"].get<double>(), 1e-9);
  fmt::print("prompt {} tokens, {} runs after a warm-up (medians), KV {:.1f} MiB over tcp\n",
             out["prompt_len"].get<std::size_t>(), out["runs"].get<int>(),
             out["kv_bytes"].get<double>() / (1 << 20));
  fmt::print("  TTFT single process      {:9.2f} ms\n", single);
  fmt::print("  TTFT disaggregated       {:9.2f} ms   ({:.3f}x single)\n",
             out["ttft_ms_disagg"].get<double>(), ttft_ratio);
  fmt::print("  prefill compute (node)   {:9.2f} ms\n", out["prefill_compute_ms"].get<double>());
  fmt::print("  KV transfer, serial      {:9.2f} ms   (shipped after the compute)\n",
             out["serial_ms"].get<double>());
  fmt::print("  KV transfer, exposed     {:9.2f} ms   ({:.3f}x serial; slices pipelined)\n",
             out["exposed_ms"].get<double>(), exposed_ratio);
  fmt::print("{}\n", out.dump());
}

/// The same prompt measured with slices pipelined, then with the prefill node restarted
/// to ship KV only after its compute.
expected<std::pair<phase, phase>> measure_both(local_cluster& c, const engine::model& m,
                                               const std::vector<std::int32_t>& tokens,
                                               const std::string& prompt, int runs) {
  if (auto ok = c.start_all(); !ok) return tl::unexpected(ok.error());
  if (auto ok = c.ready(std::chrono::seconds(30)); !ok) {
    return fail(ok.error(), "the cluster did not become ready: ");
  }
  auto pipelined = measure(c, m, tokens, prompt, runs);
  if (!pipelined) return fail(pipelined.error(), "pipelined: ");
  c.stop("prefill-0");
  if (auto ok = c.start("prefill-0", {"--kv-after-compute"}); !ok) {
    return tl::unexpected(ok.error());
  }
  if (auto ok = c.ready(std::chrono::seconds(30)); !ok) {
    return fail(ok.error(), "the restarted prefill node did not join: ");
  }
  auto serial = measure(c, m, tokens, prompt, runs);
  if (!serial) return fail(serial.error(), "serial: ");
  return std::pair{std::move(*pipelined), std::move(*serial)};
}

int run_disagg(const disagg_args& a) {
  const auto fail_with = [](const std::string& what) {
    fmt::print(stderr, "baton bench disagg: {}\n", what);
    return 1;
  };
  auto m = engine::model::load(a.model);
  if (!m) return fail_with(m.error().to_string());
  auto tok = engine::tokenizer::load(a.tokenizer, m->config().vocab_size);
  if (!tok) return fail_with(tok.error().to_string());
  const auto& cfg = m->config();
  if (a.prompt_len + 2 > static_cast<std::size_t>(cfg.seq_len)) {
    return fail_with(
        fmt::format("--prompt-len {} does not fit seq_len {}", a.prompt_len, cfg.seq_len));
  }
  const std::string prompt = prompt_of(*tok, a.prompt_len);
  const auto tokens = tok->encode(prompt, true, false);
  const std::size_t block_tokens = 16;
  const std::size_t kv_blocks = 2 * ((tokens.size() + 1 + block_tokens - 1) / block_tokens) + 4;
  const std::size_t slice_bytes =
      2 * block_tokens * static_cast<std::size_t>(cfg.kv_dim()) * sizeof(float);
  const std::size_t kv_bytes = ((tokens.size() + block_tokens - 1) / block_tokens) *
                               static_cast<std::size_t>(cfg.n_layers) * slice_bytes;
  fmt::print(stderr, "prompt: {} tokens; KV to move: {:.1f} MiB in {} slices of {} KiB\n",
             tokens.size(), static_cast<double>(kv_bytes) / (1 << 20), kv_bytes / slice_bytes,
             slice_bytes >> 10);

  const auto blocks = fmt::format("kv_blocks = {}", kv_blocks);
  local_cluster c({.name = "bench-disagg",
                   .checkpoint = a.model,
                   .tokenizer = a.tokenizer,
                   .nodes = {{"router-0", {"router"}},
                             {"prefill-0", {"prefill"}, "trainium", "cpu", blocks},
                             {"decode-0", {"decode"}, "wafer-scale", "cpu", blocks}}});
  auto measured = measure_both(c, *m, tokens, prompt, a.runs);
  if (!measured) return fail_with(measured.error().to_string());
  const auto& [pipelined, serial] = *measured;
  const double single = median(pipelined.single_ms);
  nlohmann::json out = {{"prompt_len", tokens.size()},
                        {"ttft_ms_single", single},
                        {"ttft_ms_disagg", median(pipelined.ttft_ms)},
                        {"serial_ms", median(serial.exposed_ms)},
                        {"exposed_ms", median(pipelined.exposed_ms)},
                        {"prefill_compute_ms", median(pipelined.compute_ms)},
                        {"ttft_ms_disagg_serial", median(serial.ttft_ms)},
                        {"kv_bytes", kv_bytes},
                        {"runs", a.runs},
                        {"transport", "libfabric tcp on 127.0.0.1"},
                        {"device", "cpu engine on this machine (not accelerator hardware)"}};
  if (a.json) {
    fmt::print("{}\n", out.dump());
  } else {
    print_table(out);
  }
  return 0;
}

}  // namespace

void add_bench_disagg_command(CLI::App& app, int& exit_code) {
  static disagg_args args;
  auto* cmd = bench_command(app).add_subcommand(
      "disagg", "TTFT in one process vs on a local disaggregated cluster; KV transfer exposed");
  cmd->add_option("--model", args.model, "llama2.c checkpoint")->required();
  cmd->add_option("--tokenizer", args.tokenizer, "llama2.c tokenizer")->capture_default_str();
  cmd->add_option("--prompt-len", args.prompt_len, "Prompt tokens (BOS included)")
      ->capture_default_str();
  cmd->add_option("--runs", args.runs, "Measured runs after one warm-up")->capture_default_str();
  cmd->add_flag("--json", args.json, "Print only the JSON line");
  cmd->callback([&exit_code] { exit_code = run_disagg(args); });
}

}  // namespace baton::bench
