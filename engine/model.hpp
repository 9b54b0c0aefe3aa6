#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/error.hpp"
#include "engine/mapped_file.hpp"

namespace baton::engine {

/// The shape of a Llama model, as the 7-int32 header of a llama2.c version-0 checkpoint
/// stores it (a negative vocab_size there means a separate classifier).
struct model_config {
  std::int32_t dim = 0;
  std::int32_t hidden_dim = 0;
  std::int32_t n_layers = 0;
  std::int32_t n_heads = 0;
  std::int32_t n_kv_heads = 0;
  std::int32_t vocab_size = 0;  ///< always positive here; see shared_classifier
  std::int32_t seq_len = 0;
  bool shared_classifier = true;

  [[nodiscard]] std::int32_t head_size() const { return dim / n_heads; }
  [[nodiscard]] std::int32_t kv_dim() const { return head_size() * n_kv_heads; }
  /// Weights that take part in the forward pass (legacy RoPE tables excluded).
  [[nodiscard]] std::uint64_t parameter_count() const;
  /// Exact size of the checkpoint file for this shape, header included.
  [[nodiscard]] std::uint64_t file_bytes() const;
  /// "dim=64 hidden_dim=172 n_layers=5 ...": for errors and `baton model info`.
  [[nodiscard]] std::string describe() const;
};

/// Checks that the shape is usable (positive fields, heads divide dim, kv heads divide
/// heads, even head size, sane limits). Errors are errc::invalid_argument and start
/// with `name`.
[[nodiscard]] expected<void> validate(const model_config& config, const std::string& name);

/// Read-only views of one layer's weights, row-major as llama2.c stores them.
struct layer_weights {
  const float* rms_att = nullptr;  ///< [dim]
  const float* wq = nullptr;       ///< [dim][dim]
  const float* wk = nullptr;       ///< [kv_dim][dim]
  const float* wv = nullptr;       ///< [kv_dim][dim]
  const float* wo = nullptr;       ///< [dim][dim]
  const float* rms_ffn = nullptr;  ///< [dim]
  const float* w1 = nullptr;       ///< [hidden][dim]
  const float* w2 = nullptr;       ///< [dim][hidden]
  const float* w3 = nullptr;       ///< [hidden][dim]
};

struct model_weights {
  const float* token_embedding = nullptr;  ///< [vocab][dim]
  std::vector<layer_weights> layers;
  const float* rms_final = nullptr;   ///< [dim]
  const float* classifier = nullptr;  ///< [vocab][dim]; the embedding when shared
};

/// A llama2.c version-0 checkpoint mapped read-only. Move-only; weight pointers stay
/// valid for the object's lifetime.
class model {
 public:
  /// Maps and validates `path`. Every malformed file gives errc::invalid_argument naming
  /// the file, the field and what was expected; a missing file gives errc::not_found.
  [[nodiscard]] static expected<model> load(const std::string& path);

  [[nodiscard]] const model_config& config() const { return config_; }
  [[nodiscard]] const model_weights& weights() const { return weights_; }
  [[nodiscard]] const std::string& path() const { return path_; }

 private:
  model() = default;
  std::string path_;
  mapped_file file_;
  model_config config_;
  model_weights weights_;
};

/// Writes a checkpoint of shape `config` whose weights come from a generator seeded with
/// `seed` (same seed, same bytes): uniform in +-1/sqrt(fan_in), RMSNorm weights 1.
[[nodiscard]] expected<void> write_synthetic_model(const std::string& path,
                                                   const model_config& config, std::uint64_t seed);

}  // namespace baton::engine
