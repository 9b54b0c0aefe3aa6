// `baton model synth` writes a llama2.c checkpoint of any Llama shape with seeded weights;
// `baton model info` prints a checkpoint's shape, parameter count and bytes;
// `baton model roofline` prints the emulated engine's predicted prefill and decode-step
// times (engine/roofline.hpp); `baton model profiles` lists every figure and its source.
#include <cstdio>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/model.hpp"
#include "engine/roofline.hpp"
#include "tools/commands.hpp"

namespace baton::tools {
namespace {

struct synth_args {
  engine::model_config config{288, 768, 6, 6, 6, 512, 256, true};
  std::uint64_t seed = 1;
  bool separate_classifier = false;
  std::string out;
};

int run_synth(const synth_args& args) {
  engine::model_config config = args.config;
  config.shared_classifier = !args.separate_classifier;
  if (auto ok = engine::write_synthetic_model(args.out, config, args.seed); !ok) {
    fmt::print(stderr, "baton model synth: {}\n", ok.error().to_string());
    return 1;
  }
  fmt::print(stderr, "wrote {} ({} bytes, {} parameters, seed {})\n", args.out, config.file_bytes(),
             config.parameter_count(), args.seed);
  return 0;
}

int run_info(const std::string& path) {
  auto m = engine::model::load(path);
  if (!m) {
    fmt::print(stderr, "baton model info: {}\n", m.error().to_string());
    return 1;
  }
  const engine::model_config& c = m->config();
  fmt::print("file        {}\n", path);
  fmt::print("shape       {}\n", c.describe());
  fmt::print("head_size   {}\nkv_dim      {}\n", c.head_size(), c.kv_dim());
  fmt::print("parameters  {}\n", c.parameter_count());
  fmt::print("bytes       {}\n", c.file_bytes());
  fmt::print("kv_bytes_per_token {}\n", 2ULL * static_cast<unsigned long long>(c.n_layers) *
                                            static_cast<unsigned long long>(c.kv_dim()) *
                                            sizeof(float));
  return 0;
}

struct roofline_args {
  std::string profile;
  std::string model;
  std::string checkpoint;
  std::string precision = "bf16";
  std::size_t prompt = 0;
  std::size_t batch = 1;
  std::size_t context = 0;  ///< 0: the prompt length
  bool json = false;
};

double ms(std::chrono::nanoseconds t) {
  return static_cast<double>(t.count()) / 1e6;
}

/// The profile, shape and precision the arguments name.
struct roofline_inputs {
  engine::hardware_profile profile;
  engine::model_shape shape;
  engine::precision numbers = engine::precision::bf16;
};

expected<roofline_inputs> resolve(const roofline_args& args) {
  auto catalog = engine::load_builtin_profiles();
  if (!catalog) return tl::unexpected(catalog.error());
  auto profile = catalog->profile(args.profile);
  if (!profile) return tl::unexpected(profile.error());
  auto numbers = engine::parse_precision(args.precision);
  if (!numbers) return tl::unexpected(numbers.error());
  if (args.model == "custom") {
    if (args.checkpoint.empty()) {
      return fail(errc::invalid_argument, "--model custom needs --checkpoint FILE");
    }
    auto m = engine::model::load(args.checkpoint);
    if (!m) return tl::unexpected(m.error());
    return roofline_inputs{*profile, engine::shape_from_config(m->config(), args.checkpoint),
                           *numbers};
  }
  auto shape = catalog->shape(args.model);
  if (!shape) return tl::unexpected(shape.error());
  return roofline_inputs{*profile, *shape, *numbers};
}

int run_roofline(const roofline_args& args) {
  auto in = resolve(args);
  if (!in) {
    fmt::print(stderr, "baton model roofline: {}\n", in.error().to_string());
    return 1;
  }
  const std::size_t context = args.context == 0 ? args.prompt : args.context;
  auto prefill = engine::predict_prefill(in->profile, in->shape, args.prompt, 0, in->numbers);
  const std::vector<std::size_t> contexts(args.batch, context);
  auto step = engine::predict_decode_step(in->profile, in->shape, contexts, in->numbers);
  if (!prefill || !step) {
    fmt::print(stderr, "baton model roofline: {}\n",
               (prefill ? step.error() : prefill.error()).to_string());
    return 1;
  }
  const auto& shape = in->shape;
  const double weight_bytes =
      static_cast<double>(shape.params * engine::element_bytes(in->numbers));
  const double kv_token = static_cast<double>(engine::kv_bytes_per_token(shape, in->numbers));
  const double prompt_kv = kv_token * static_cast<double>(args.prompt);
  const double handoff_s = engine::kv_transfer_s(in->profile, prompt_kv);
  const double resident = weight_bytes + kv_token * static_cast<double>(args.batch * context);
  const double tokens_per_s = 1e9 / static_cast<double>(step->time.count());
  const std::string label = fmt::format("emulated:{}", in->profile.name);
  if (args.json) {
    fmt::print("{}\n", nlohmann::json{{"emulated", true},
                                      {"predicted", true},
                                      {"profile", label},
                                      {"model", shape.name},
                                      {"precision", args.precision},
                                      {"prompt_tokens", args.prompt},
                                      {"batch", args.batch},
                                      {"context_tokens", context},
                                      {"predicted_prefill_ms", ms(prefill->time)},
                                      {"prefill_flops", prefill->flops},
                                      {"predicted_decode_step_ms", ms(step->time)},
                                      {"decode_basis", step->basis},
                                      {"predicted_tokens_per_s_per_user", tokens_per_s},
                                      {"kv_bytes_per_token", kv_token},
                                      {"predicted_kv_handoff_ms", handoff_s * 1e3},
                                      {"resident_bytes", resident},
                                      {"mem_bytes", in->profile.mem_bytes.value}}
                           .dump());
    return 0;
  }
  fmt::print("predicted by the {} roofline (not measured): {} {} on {}\n", label, shape.name,
             args.precision, in->profile.description);
  fmt::print(
      "predicted prefill of {} tokens: {:.2f} ms ({:.3g} FLOP; compute {:.2f} ms, "
      "weights {:.2f} ms, overhead {:.2f} ms)\n",
      args.prompt, ms(prefill->time), prefill->flops, prefill->compute_s * 1e3,
      prefill->memory_s * 1e3, prefill->overhead_s * 1e3);
  if (step->basis == "roofline") {
    fmt::print(
        "predicted decode step, batch {} at context {}: {:.2f} ms ({:.4g} GB read; memory "
        "{:.2f} ms, compute {:.2f} ms, all-reduce {:.2f} ms)\n",
        args.batch, context, ms(step->time), step->bytes_read / 1e9, step->memory_s * 1e3,
        step->compute_s * 1e3, step->allreduce_s * 1e3);
  } else {
    fmt::print(
        "predicted decode step, batch {} at context {}: {:.3f} ms ({} per-user tokens/s; "
        "batch and context independence assumed)\n",
        args.batch, context, ms(step->time), step->basis);
  }
  fmt::print("predicted decode speed: {:.1f} tokens/s per user\n", tokens_per_s);
  fmt::print(
      "predicted KV hand-off of the prompt: {:.4g} MB ({} B/token) in {:.2f} ms over "
      "{:.4g} GB/s at efficiency 0.8\n",
      prompt_kv / 1e6, kv_token, handoff_s * 1e3, in->profile.net_bw_bytes_per_s.value / 1e9);
  fmt::print("predicted memory: {:.4g} GB of weights and KV against {:.4g} GB on one {} unit{}\n",
             resident / 1e9, in->profile.mem_bytes.value / 1e9, label,
             resident > in->profile.mem_bytes.value ? " (does not fit: needs more units)" : "");
  return 0;
}

int run_profiles(bool json) {
  auto catalog = engine::load_builtin_profiles();
  if (!catalog) {
    fmt::print(stderr, "baton model profiles: {}\n", catalog.error().to_string());
    return 1;
  }
  nlohmann::json all = nlohmann::json::object();
  for (const auto& p : catalog->profiles) {
    if (!json) fmt::print("emulated:{}  {}\n", p.name, p.description);
    for (const auto& [key, f] : p.figures()) {
      if (json) {
        all["profiles"][p.name][key] = {{"value", f->value}, {"source", f->source}};
      } else {
        fmt::print("  {:<36} {:<12.6g} {}\n", key, f->value, f->source);
      }
    }
  }
  for (const auto& s : catalog->shapes) {
    if (json) {
      all["shapes"][s.name] = {{"params", s.params},         {"n_layers", s.n_layers},
                               {"d_model", s.d_model},       {"n_heads", s.n_heads},
                               {"n_kv_heads", s.n_kv_heads}, {"head_dim", s.head_dim},
                               {"vocab_size", s.vocab_size}, {"max_context", s.max_context}};
    } else {
      fmt::print(
          "shape {}  params={} layers={} d_model={} heads={}/{} head_dim={} vocab={} "
          "max_context={}\n",
          s.name, s.params, s.n_layers, s.d_model, s.n_heads, s.n_kv_heads, s.head_dim,
          s.vocab_size, s.max_context);
    }
  }
  if (json) fmt::print("{}\n", all.dump());
  return 0;
}

}  // namespace

void add_model_command(CLI::App& app, int& exit_code) {
  auto* model = app.add_subcommand(
      "model", "Model checkpoints: synthesize, inspect; emulated hardware: roofline, profiles");
  model->require_subcommand(1);

  static synth_args synth;
  auto* s = model->add_subcommand("synth", "Write a checkpoint with deterministic weights");
  s->add_option("--dim", synth.config.dim, "Model dimension")->required();
  s->add_option("--hidden", synth.config.hidden_dim, "FFN hidden dimension")->required();
  s->add_option("--layers", synth.config.n_layers, "Layers")->required();
  s->add_option("--heads", synth.config.n_heads, "Attention heads")->required();
  s->add_option("--kv-heads", synth.config.n_kv_heads, "Key/value heads (GQA)")->required();
  s->add_option("--vocab", synth.config.vocab_size, "Vocabulary size")->required();
  s->add_option("--seq-len", synth.config.seq_len, "Maximum sequence length")->required();
  s->add_option("--seed", synth.seed, "Weight generator seed")->required();
  s->add_flag("--separate-classifier", synth.separate_classifier,
              "Store a classifier separate from the token embedding");
  s->add_option("--out", synth.out, "Output file")->required();
  s->callback([&exit_code] { exit_code = run_synth(synth); });

  static std::string info_path;
  auto* i = model->add_subcommand("info", "Print a checkpoint's shape, parameters and bytes");
  i->add_option("file", info_path, "Checkpoint (llama2.c version 0)")->required();
  i->callback([&exit_code] { exit_code = run_info(info_path); });

  static roofline_args roofline;
  auto* r = model->add_subcommand(
      "roofline", "Predicted (emulated) prefill and decode-step times of a shape on a profile");
  r->add_option("--profile", roofline.profile, "Hardware profile (see `baton model profiles`)")
      ->required();
  r->add_option("--model", roofline.model,
                "Shape: llama-3.1-8b, llama-3.1-70b, llama-3.1-405b or custom")
      ->required();
  r->add_option("--checkpoint", roofline.checkpoint, "llama2.c checkpoint for --model custom");
  constexpr std::size_t max_tokens = std::size_t{1} << 24;  // past any shape's context
  r->add_option("--prompt", roofline.prompt, "Prompt tokens to prefill")
      ->required()
      ->check(CLI::Range(std::size_t{1}, max_tokens));
  r->add_option("--batch", roofline.batch, "Sequences in the decode step")
      ->check(CLI::Range(std::size_t{1}, max_tokens));
  r->add_option("--context", roofline.context,
                "Positions each sequence holds in the decode step (default: the prompt)")
      ->check(CLI::Range(std::size_t{0}, max_tokens));
  r->add_option("--precision", roofline.precision, "bf16 or fp8");
  r->add_flag("--json", roofline.json, "One JSON object instead of text");
  r->callback([&exit_code] { exit_code = run_roofline(roofline); });

  static bool profiles_json = false;
  auto* p = model->add_subcommand("profiles",
                                  "List the emulated hardware profiles and shapes, "
                                  "every figure with its source");
  p->add_flag("--json", profiles_json, "One JSON object instead of text");
  p->callback([&exit_code] { exit_code = run_profiles(profiles_json); });
}

}  // namespace baton::tools
