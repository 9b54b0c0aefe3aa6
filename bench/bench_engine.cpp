// `baton bench engine`: decode tokens/s by batch at a fixed context, prefill tokens/s,
// bytes read per decode step, and this machine's streaming read bandwidth and FMA peak
// measured in the same run with the engine's thread count. Figures only; no assertions.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "bench/commands.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/kernels.hpp"
#include "engine/kv_transfer.hpp"
#include "engine/model.hpp"
#include "engine/thread_pool.hpp"

namespace baton::bench {
namespace {

using clock_type = std::chrono::steady_clock;

struct bench_args {
  std::string model;
  bool json = false;
  std::size_t threads = 2;
  std::size_t context = 256;
  std::size_t prompt = 512;
  std::size_t steps = 8;
  std::vector<std::size_t> batches{1, 8, 32};
};

double seconds_since(clock_type::time_point start) {
  return std::chrono::duration<double>(clock_type::now() - start).count();
}

std::vector<std::int32_t> bench_tokens(std::size_t n, std::int32_t vocab) {
  std::vector<std::int32_t> tokens(n);
  for (std::size_t i = 0; i < n; ++i) {
    tokens[i] = static_cast<std::int32_t>((i * 2654435761U) % static_cast<std::size_t>(vocab));
  }
  return tokens;
}

/// Best of three full reads of a 256 MiB buffer, split over the pool; GB/s.
double read_bandwidth_gb_s(engine::thread_pool& pool, engine::kernel_path path) {
  std::vector<float> buffer(std::size_t{64} << 20, 1.0f);
  std::vector<float> sink(pool.size());
  double best = 0;
  for (int round = 0; round < 3; ++round) {
    const auto start = clock_type::now();
    pool.run([&](std::size_t i) {
      const std::size_t per = buffer.size() / pool.size();
      const float* p = buffer.data() + i * per;
      sink[i] = engine::dot(path, p, p, per);  // a == b: each line is read once
    });
    best =
        std::max(best, static_cast<double>(buffer.size() * sizeof(float)) / seconds_since(start));
  }
  return best / 1e9;
}

/// FMA throughput of every participant at once; GFLOP/s.
double fma_peak_gflop_s(engine::thread_pool& pool, engine::kernel_path path) {
  constexpr std::uint64_t iterations = 20'000'000;
  std::vector<float> sink(pool.size());
  double best = 0;
  for (int round = 0; round < 2; ++round) {
    const auto start = clock_type::now();
    pool.run([&](std::size_t i) { sink[i] = engine::fma_burn(path, iterations); });
    const double flops = static_cast<double>(iterations) * 12.0 *
                         static_cast<double>(engine::lanes(path)) * 2.0 *
                         static_cast<double>(pool.size());
    best = std::max(best, flops / seconds_since(start));
  }
  return best / 1e9;
}

struct decode_figures {
  std::vector<double> tok_s;
};

/// Decode tokens/s for each batch: every sequence starts from a copy of `base`'s KV.
expected<decode_figures> measure_decode(engine::cpu_engine& e, engine::sequence_id base,
                                        const bench_args& args) {
  decode_figures out;
  const std::size_t layers = e.pool().layout().n_layers;
  const std::size_t blocks = e.blocks(base).size();
  for (const std::size_t batch : args.batches) {
    std::vector<engine::sequence_id> ids;
    for (std::size_t b = 0; b < batch; ++b) {
      auto id = e.reserve_sequence(e.length(base));
      if (!id) return tl::unexpected(id.error());
      for (std::size_t layer = 0; layer < layers; ++layer) {
        for (std::size_t block = 0; block < blocks; ++block) {
          auto ok = engine::import_slice(e, *id, block, layer,
                                         *engine::export_slice(e, base, block, layer));
          if (!ok) return tl::unexpected(ok.error());
        }
      }
      ids.push_back(*id);
    }
    std::vector<engine::decode_input> step;
    for (std::size_t b = 0; b < batch; ++b) {
      step.push_back({ids[b], static_cast<std::int32_t>(b % 7 + 3)});
    }
    if (auto warm = e.decode(step); !warm) return tl::unexpected(warm.error());
    const auto start = clock_type::now();
    for (std::size_t s = 0; s < args.steps; ++s) {
      if (auto r = e.decode(step); !r) return tl::unexpected(r.error());
    }
    out.tok_s.push_back(static_cast<double>(batch * args.steps) / seconds_since(start));
    for (const auto id : ids) e.remove_sequence(id);
  }
  return out;
}

/// Every figure of one run.
struct figures {
  std::size_t context = 0;
  std::size_t prompt = 0;
  std::vector<double> decode_tok_s;  ///< one per batch size
  double prefill_tok_s = 0;
  double read_gb_s = 0;
  double peak_gflop_s = 0;
  double bytes_per_step = 0;
  double bandwidth_fraction = 0;       ///< the first batch against read bandwidth
  double decode_compute_fraction = 0;  ///< the largest batch against FMA peak
  double compute_fraction = 0;         ///< prefill against FMA peak
  std::string fingerprint;
};

/// Decode steps at each batch size over a `context`-token sequence, then one prefill.
expected<figures> measure_engine(const engine::model& m, const bench_args& args) {
  figures f;
  const engine::model_config& c = m.config();
  const auto seq_len = static_cast<std::size_t>(c.seq_len);
  f.context = std::min(args.context, seq_len - std::min(seq_len, args.steps + 2));
  f.prompt = std::min(args.prompt, seq_len);
  const std::size_t max_batch = *std::max_element(args.batches.begin(), args.batches.end());
  engine::engine_options options;
  options.threads = args.threads;
  options.max_sequences = max_batch + 2;
  options.max_batch_tokens = 512;
  options.kv_blocks = (max_batch + 1) * ((f.context + args.steps + 2) / 16 + 2) + f.prompt / 16 + 2;
  auto e = engine::cpu_engine::create(m, options);
  if (!e) return tl::unexpected(e.error());
  auto& eng = **e;
  f.fingerprint = eng.fingerprint();
  auto base = eng.add_sequence();
  if (!base) return tl::unexpected(base.error());
  if (auto r = eng.prefill(*base, bench_tokens(f.context, c.vocab_size)); !r) {
    return tl::unexpected(r.error());
  }
  auto decode = measure_decode(eng, *base, args);
  if (!decode) return tl::unexpected(decode.error());
  f.decode_tok_s = decode->tok_s;
  eng.remove_sequence(*base);
  auto p = eng.add_sequence();
  if (!p) return tl::unexpected(p.error());
  const auto start = clock_type::now();
  if (auto r = eng.prefill(*p, bench_tokens(f.prompt, c.vocab_size)); !r) {
    return tl::unexpected(r.error());
  }
  f.prefill_tok_s = static_cast<double>(f.prompt) / seconds_since(start);
  eng.remove_sequence(*p);
  engine::thread_pool pool(args.threads);
  f.read_gb_s = read_bandwidth_gb_s(pool, eng.kernel());
  f.peak_gflop_s = fma_peak_gflop_s(pool, eng.kernel());
  return f;
}

/// The measured rates as fractions of this machine's read bandwidth and FMA peak.
figures roofline_fractions(const engine::model_config& c, const bench_args& args, figures f) {
  const double params = static_cast<double>(c.parameter_count());
  const double kv_bytes = static_cast<double>(f.context) * 2.0 * c.n_layers * c.kv_dim() * 4.0;
  // Bytes one decode step reads: every weight once, plus each sequence's KV.
  const auto step_bytes = [&](std::size_t batch) {
    return params * 4.0 + static_cast<double>(batch) * kv_bytes;
  };
  f.bytes_per_step = step_bytes(1);
  // Measured against the first batch size (1 by default): steps/s x bytes/step.
  const double first_batch = static_cast<double>(args.batches.front());
  f.bandwidth_fraction =
      f.decode_tok_s[0] / first_batch * step_bytes(args.batches.front()) / (f.read_gb_s * 1e9);
  // The largest batch against FMA peak (2 flops per parameter per token).
  f.decode_compute_fraction = f.decode_tok_s.back() * 2.0 * params / (f.peak_gflop_s * 1e9);
  f.compute_fraction = f.prefill_tok_s * 2.0 * params / (f.peak_gflop_s * 1e9);
  return f;
}

void print(const bench_args& args, const engine::model_config& c, const figures& f) {
  if (args.json) {
    fmt::print(
        "{{\"model\": \"{}\", \"params\": {}, \"batch\": [{}], \"context\": {}, "
        "\"decode_tok_s\": [{:.2f}], \"prefill_tok_s\": {:.2f}, \"prompt\": {}, "
        "\"bytes_per_step\": {:.0f}, \"read_gb_s\": {:.2f}, \"peak_gflop_s\": {:.1f}, "
        "\"bandwidth_fraction\": {:.3f}, \"compute_fraction\": {:.3f}, "
        "\"decode_compute_fraction\": {:.3f}, \"threads\": {}, "
        "\"fingerprint\": \"{}\"}}\n",
        args.model, c.parameter_count(), fmt::join(args.batches, ", "), f.context,
        fmt::join(f.decode_tok_s, ", "), f.prefill_tok_s, f.prompt, f.bytes_per_step, f.read_gb_s,
        f.peak_gflop_s, f.bandwidth_fraction, f.compute_fraction, f.decode_compute_fraction,
        args.threads, f.fingerprint);
    return;
  }
  fmt::print("model            {} ({} parameters)\n", args.model, c.parameter_count());
  fmt::print("engine           {}, {} threads\n", f.fingerprint, args.threads);
  for (std::size_t i = 0; i < args.batches.size(); ++i) {
    fmt::print("decode batch {:<3} {:10.1f} tok/s (context {})\n", args.batches[i],
               f.decode_tok_s[i], f.context);
  }
  fmt::print("prefill          {:10.1f} tok/s ({}-token prompt)\n", f.prefill_tok_s, f.prompt);
  fmt::print("bytes per step   {:10.0f} (batch 1: weights + KV)\n", f.bytes_per_step);
  fmt::print("read bandwidth   {:10.2f} GB/s\n", f.read_gb_s);
  fmt::print("FMA peak         {:10.1f} GFLOP/s\n", f.peak_gflop_s);
  fmt::print("decode batch {:<3} {:10.3f} of read bandwidth\n", args.batches.front(),
             f.bandwidth_fraction);
  fmt::print("decode batch {:<3} {:10.3f} of FMA peak\n", args.batches.back(),
             f.decode_compute_fraction);
  fmt::print("prefill          {:10.3f} of FMA peak\n", f.compute_fraction);
}

int run_bench(const bench_args& args) {
  auto m = engine::model::load(args.model);
  auto f = m ? measure_engine(*m, args) : expected<figures>(tl::unexpected(m.error()));
  if (!f) {
    fmt::print(stderr, "baton bench engine: {}\n", f.error().to_string());
    return 1;
  }
  print(args, m->config(), roofline_fractions(m->config(), args, std::move(*f)));
  return 0;
}

}  // namespace

void add_bench_engine_command(CLI::App& app, int& exit_code) {
  auto* bench = &bench_command(app);
  static bench_args args;
  auto* cmd =
      bench->add_subcommand("engine", "CPU engine throughput against this machine's limits");
  cmd->add_option("--model", args.model, "llama2.c checkpoint")->required();
  cmd->add_flag("--json", args.json, "Print one JSON object");
  cmd->add_option("--threads", args.threads, "Engine threads (default 2)");
  cmd->add_option("--context", args.context, "Decode context (default 256)");
  cmd->add_option("--prompt", args.prompt, "Prefill prompt length (default 512)");
  cmd->add_option("--steps", args.steps, "Timed decode steps per batch (default 8)");
  cmd->add_option("--batch", args.batches, "Decode batch sizes (default 1 8 32)");
  cmd->callback([&exit_code] { exit_code = run_bench(args); });
}

}  // namespace baton::bench
