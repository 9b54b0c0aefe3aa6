// `baton generate`: runs the CPU engine in this process, or with --router sends the
// request to a cluster through the router client, and prints exactly what llama2.c's
// `run` prints for the same arguments; diagnostics go to stderr. In-process, --model and
// --tokenizer are found as nodes find [model]'s files (runtime::resolve_model).
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <optional>
#include <string>

#include <fmt/format.h>

#include "client/router_client.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/generate.hpp"
#include "engine/model.hpp"
#include "engine/tokenizer.hpp"
#include "runtime/topology.hpp"
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
  std::vector<std::string> routers;  ///< with --router: generate on a cluster
  std::uint32_t timeout_ms = 0;
  std::string api_key;  ///< with --router: for routers that ask for API keys
  std::string tls_ca;   ///< with --router: TLS, the CA file that verifies the routers
};

/// The same output contract through a cluster's router: the prompt pieces it echoes, the
/// streamed text, a newline.
int run_on_cluster(const generate_args& args) {
  client::client_options co;
  co.routers = args.routers;
  co.api_key = args.api_key;
  co.tls_ca_file = args.tls_ca;
  auto client = client::router_client::connect(co);
  if (!client) {
    fmt::print(stderr, "baton generate: {}\n", client.error().to_string());
    return 1;
  }
  wire::generate_request r;
  r.prompt = args.prompt;
  r.max_positions = static_cast<std::uint32_t>(std::max(args.options.steps, 0));
  r.params = {args.options.temperature, args.options.top_p, args.seed.value_or(0)};
  r.has_seed = args.seed.has_value();
  r.timeout_ms = args.timeout_ms;
  const auto started = std::chrono::steady_clock::now();
  std::optional<std::chrono::steady_clock::time_point> first;
  auto result = (*client)->generate(r, [&](const client::client_event& e) {
    const std::string& text = std::holds_alternative<wire::accepted>(e)
                                  ? std::get<wire::accepted>(e).prompt_text
                                  : std::get<wire::token_chunk>(e).text;
    if (!first && std::holds_alternative<wire::token_chunk>(e)) {
      first = std::chrono::steady_clock::now();
    }
    std::fwrite(text.data(), 1, text.size(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputc('\n', stdout);
  std::fflush(stdout);
  if (!result) {
    fmt::print(stderr, "baton generate: {}\n", result.error().to_string());
    return 1;
  }
  const auto ms = [&](std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::milli>(t - started).count();
  };
  fmt::print(stderr,
             "router {}; request {}; seed {}; {} (prefill {}, decode {}); prompt {} tokens, "
             "{} generated; first token at {:.1f} ms, end at {:.1f} ms{}\n",
             result->router, static_cast<std::uint64_t>(result->request), result->seed,
             result->placement, result->prefill_node.empty() ? "-" : result->prefill_node,
             result->decode_node, result->prompt_tokens, result->completion_tokens,
             first ? ms(*first) : 0.0, ms(std::chrono::steady_clock::now()),
             result->resumes == 0
                 ? std::string()
                 : fmt::format("; resumed {} time(s) after its router died", result->resumes));
  return 0;
}

/// --model and --tokenizer found as a node finds [model]'s files: a bare name in the model
/// search path (BATON_MODEL_PATH, ./models, ../shared/models), a path with a folder from
/// the current folder. The error names what is missing and every folder searched.
expected<runtime::model_spec> model_files(const generate_args& args) {
  std::error_code ec;
  const auto here = std::filesystem::current_path(ec);
  if (ec) return fail(errc::failed, "cannot read the current folder: " + ec.message());
  auto files = runtime::resolve_model(args.model, args.tokenizer, here);
  const auto missing = files.missing();
  if (missing.empty()) return files;
  std::string message = missing;
  for (const auto* name : {&args.model, &args.tokenizer}) {
    const std::filesystem::path p(*name);
    if (!p.has_parent_path() && std::filesystem::is_regular_file(here / p, ec)) {
      message += fmt::format(" ('{}' is in the current folder, which is not searched: write ./{})",
                             *name, *name);
    }
  }
  if (files.checkpoint_named || files.tokenizer_named) {
    message += "; " + runtime::model_path_hint();
  }
  return fail(errc::not_found, message);
}

int run_generate(const generate_args& args) {
  const auto fail_with = [](const error& e) {
    fmt::print(stderr, "baton generate: {}\n", e.to_string());
    return 1;
  };
  if (!args.routers.empty()) return run_on_cluster(args);
  if (args.model.empty() || args.tokenizer.empty()) {
    return fail_with(error{errc::invalid_argument,
                           "--model and --tokenizer are required "
                           "without --router"});
  }
  auto files = model_files(args);
  if (!files) return fail_with(files.error());
  auto m = engine::model::load(files->checkpoint.string());
  if (!m) return fail_with(m.error());
  auto tok = engine::tokenizer::load(files->tokenizer.string(), m->config().vocab_size);
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
  auto* cmd = app.add_subcommand(
      "generate", "Generate text with the CPU engine in this process, or on a cluster (--router)");
  cmd->add_option("--model", args.model,
                  "llama2.c checkpoint (in-process): a name is looked up in the model search "
                  "path as nodes do (BATON_MODEL_PATH, ./models, ../shared/models)");
  cmd->add_option("--tokenizer", args.tokenizer, "llama2.c tokenizer (in-process), found likewise");
  cmd->add_option("--router", args.routers,
                  "Router native address HOST:PORT (repeat for failover): run on the cluster");
  cmd->add_option("--timeout-ms", args.timeout_ms, "Client deadline with --router (0: router's)");
  cmd->add_option("--api-key", args.api_key,
                  "API key for routers that ask for one (default: $BATON_API_KEY)")
      ->envname("BATON_API_KEY");
  cmd->add_option("--tls-ca", args.tls_ca,
                  "With --router: connect over TLS, verifying the routers against this CA file")
      ->check(CLI::ExistingFile);
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
