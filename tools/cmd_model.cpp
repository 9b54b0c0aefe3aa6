// `baton model synth` writes a llama2.c checkpoint of any Llama shape with seeded weights;
// `baton model info` prints a checkpoint's shape, parameter count and bytes.
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "engine/model.hpp"
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

}  // namespace

void add_model_command(CLI::App& app, int& exit_code) {
  auto* model = app.add_subcommand("model", "Model checkpoints: synthesize, inspect");
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
}

}  // namespace baton::tools
