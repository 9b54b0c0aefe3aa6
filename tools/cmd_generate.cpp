// `baton generate`: runs the CPU engine in this process and prints exactly what
// llama2.c's `run` prints for the same arguments; diagnostics go to stderr.
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "engine/cpu_engine.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

struct generate_args {
  std::string model;
  std::string tokenizer;
  std::string prompt;
  engine::generate_options options;
  std::optional<std::uint64_t> seed;
  std::size_t threads = 2;
  std::string kernel;
};

int run_generate(const generate_args& args) {
  const auto fail_with = [](const error& e) {
    fmt::print(stderr, "baton generate: {}\n", e.to_string());
    return 1;
  };
  auto m = engine::model::load(args.model);
  if (!m) return fail_with(m.error());
  auto tok = engine::tokenizer::load(args.tokenizer, m->config().vocab_size);
  if (!tok) return fail_with(tok.error());
  engine::engine_options eo;
  eo.threads = args.threads;
  eo.max_sequences = 1;
  if (!args.kernel.empty()) {
    eo.kernel = engine::parse_kernel_path(args.kernel);
    if (!eo.kernel)
      return fail_with(error{errc::invalid_argument, "unknown kernel " + args.kernel});
  }
  auto eng = engine::cpu_engine::create(*m, eo);
  if (!eng) return fail_with(eng.error());
  engine::generate_options options = args.options;
  if (args.seed) {
    if (*args.seed == 0) return fail_with(error{errc::invalid_argument, "--seed must be > 0"});
    options.seed = *args.seed;
  } else {
    // Like llama2.c: no seed means the time; it is printed so the run can be replayed.
    options.seed = static_cast<std::uint64_t>(std::chrono::system_clock::now().time_since_epoch() /
                                              std::chrono::seconds(1));
  }
  auto result = engine::generate(**eng, *tok, args.prompt, options, [](std::string_view piece) {
    std::fwrite(piece.data(), 1, piece.size(), stdout);
    std::fflush(stdout);
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!result) return fail_with(result.error());
  const double decode_tok_s =
      result->decode_seconds > 0
          ? static_cast<double>(result->generated.size()) / result->decode_seconds
          : 0.0;
  fmt::print(stderr,
             "{}; seed {}; prompt {} tokens prefilled in {:.3f} ms; {} tokens generated, "
             "decode {:.1f} tok/s\n",
             (*eng)->fingerprint(), options.seed, result->prompt_tokens.size(),
             result->prefill_seconds * 1e3, result->generated.size(), decode_tok_s);
  return 0;
}

}  // namespace

void add_generate_command(CLI::App& app, int& exit_code) {
  static generate_args args;
  auto* cmd = app.add_subcommand("generate", "Generate text with the CPU engine in this process");
  cmd->add_option("--model", args.model, "llama2.c checkpoint")->required();
  cmd->add_option("--tokenizer", args.tokenizer, "llama2.c tokenizer")->required();
  cmd->add_option("--temperature", args.options.temperature, "0 for greedy (default 1.0)");
  cmd->add_option("--top-p", args.options.top_p, "Nucleus sampling threshold (default 0.9)");
  cmd->add_option("--seed", args.seed, "Sampler seed (default: the time, printed)");
  cmd->add_option("--steps", args.options.steps,
                  "Positions including the prompt; 0 means seq_len (default 256)");
  cmd->add_option("--threads", args.threads, "Engine threads (default 2)");
  cmd->add_option("--kernel", args.kernel, "Kernel path: scalar, avx2, avx512 (default best)");
  cmd->add_option("prompt", args.prompt, "Prompt text");
  cmd->callback([&exit_code] { exit_code = run_generate(args); });
}

}  // namespace baton::tools
