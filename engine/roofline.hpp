#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "engine/model.hpp"

namespace baton::engine {

/// The roofline model of ../shared/docs/HARDWARE.md section 5: prefill and decode-step
/// times of a model shape on a hardware profile, from published peaks and calibrated
/// efficiencies. Profiles and shapes live in engine/profiles.toml, embedded at build time.
/// Every figure these functions return is a prediction, never a measurement.

/// One number with where it came from (a HARDWARE.md section and reference).
struct figure {
  double value = 0.0;
  std::string source;
};

enum class decode_model : std::uint8_t {
  roofline,                ///< the section 5 recipe
  published_tokens_per_s,  ///< TPOT = 1 / a published per-user speed (CS-3)
};

/// One serving unit (an instance or an 8-GPU node).
struct hardware_profile {
  std::string name;  ///< "trn2"
  std::string description;
  engine::decode_model decode = decode_model::roofline;
  figure devices;
  figure flops_bf16_per_s;
  std::optional<figure> flops_fp8_per_s;  ///< absent when unpublished
  figure mem_bytes;
  figure mem_bw_bytes_per_s;
  figure net_bw_bytes_per_s;
  figure scale_up_bw_bytes_per_s;  ///< per device; informational
  figure prefill_mfu;
  figure prefill_overhead_s;
  figure decode_mbu;   ///< roofline decode only
  figure decode_mfu;   ///< roofline decode only
  figure allreduce_s;  ///< one TP all-reduce; roofline decode only
  /// A published per-user decode speed (1/TPOT) of one shape.
  struct published_speed {
    std::string shape;
    std::uint64_t shape_params = 0;  ///< filled from the catalog's shape of that name
    figure tokens_per_s;
  };
  std::vector<published_speed> decode_tokens_per_s;  ///< published_tokens_per_s only

  /// Every figure present, with its key ("mem_bw_bytes_per_s"), for listings and tests.
  [[nodiscard]] std::vector<std::pair<std::string, const figure*>> figures() const;
};

/// A Llama-style model shape.
struct model_shape {
  std::string name;  ///< "llama-3.1-70b", or "custom" for a checkpoint's shape
  std::uint64_t params = 0;
  std::uint64_t n_layers = 0;
  std::uint64_t d_model = 0;
  std::uint64_t n_heads = 0;
  std::uint64_t n_kv_heads = 0;
  std::uint64_t head_dim = 0;
  std::uint64_t vocab_size = 0;
  std::uint64_t max_context = 0;
  std::string source;  ///< where the shape came from
};

/// The number format of weights, KV and arithmetic.
enum class precision : std::uint8_t { bf16, fp8 };
[[nodiscard]] std::size_t element_bytes(precision p);
/// "bf16" or "fp8"; errc::invalid_argument otherwise.
[[nodiscard]] expected<precision> parse_precision(std::string_view text);

/// 2 (K,V) x n_layers x n_kv_heads x head_dim x element_bytes (HARDWARE.md section 2).
[[nodiscard]] std::uint64_t kv_bytes_per_token(const model_shape& shape, precision p);

/// The shape of a llama2.c checkpoint, named "custom".
[[nodiscard]] model_shape shape_from_config(const model_config& config, const std::string& path);

/// Every profile and shape of a profiles file.
struct profile_catalog {
  std::vector<hardware_profile> profiles;
  std::vector<model_shape> shapes;

  /// errc::not_found naming the profiles there are.
  [[nodiscard]] expected<hardware_profile> profile(std::string_view name) const;
  /// errc::not_found naming the shapes there are.
  [[nodiscard]] expected<model_shape> shape(std::string_view name) const;
};

/// The text of engine/profiles.toml as it was at build time.
[[nodiscard]] std::string_view builtin_profiles_toml();
/// Parses a profiles file. errc::invalid_argument naming file:line:column and the key for
/// malformed TOML, a missing key, a figure without a source or a value out of range.
[[nodiscard]] expected<profile_catalog> parse_profiles(std::string_view text,
                                                       std::string_view file_name);
/// parse_profiles(builtin_profiles_toml(), "profiles.toml").
[[nodiscard]] expected<profile_catalog> load_builtin_profiles();

struct prefill_prediction {
  std::chrono::nanoseconds time{0};
  double flops = 0.0;       ///< 2·P·S + attention (section 5)
  double compute_s = 0.0;   ///< flops / (flops_peak · MFU)
  double memory_s = 0.0;    ///< weight bytes / (BW · MBU)
  double overhead_s = 0.0;  ///< the profile's fixed overhead
};

struct decode_prediction {
  std::chrono::nanoseconds time{0};
  double bytes_read = 0.0;   ///< weights + every sequence's KV (roofline only)
  double memory_s = 0.0;     ///< roofline only
  double compute_s = 0.0;    ///< roofline only
  double allreduce_s = 0.0;  ///< 2·L·t_allreduce (roofline only)
  /// "roofline", "published" or "extrapolated from <shape>" (a shape with no published
  /// speed on a published_tokens_per_s profile: linear in params from the nearest one).
  std::string basis;
};

/// Appending `tokens` (>= 1) positions after `prior_tokens` already in the KV cache.
/// errc::invalid_argument for zero tokens or fp8 on a profile without an fp8 peak.
[[nodiscard]] expected<prefill_prediction> predict_prefill(const hardware_profile& profile,
                                                           const model_shape& shape,
                                                           std::size_t tokens,
                                                           std::size_t prior_tokens, precision p);

/// One decode step of a batch whose sequences hold `contexts[i]` positions each
/// (contexts.size() is the batch, >= 1). Errors as predict_prefill().
[[nodiscard]] expected<decode_prediction> predict_decode_step(const hardware_profile& profile,
                                                              const model_shape& shape,
                                                              std::span<const std::size_t> contexts,
                                                              precision p);

/// Seconds to move `bytes` over the profile's network at efficiency 0.8 (HARDWARE.md
/// section 2, eta [A]), without latency.
[[nodiscard]] double kv_transfer_s(const hardware_profile& profile, double bytes);

}  // namespace baton::engine
