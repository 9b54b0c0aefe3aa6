#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "base/error.hpp"
#include "engine/cpu_engine.hpp"
#include "engine/sampler.hpp"
#include "engine/tokenizer.hpp"

namespace baton::engine {

/// llama2.c `run` parameters (its defaults: -t 1.0 -p 0.9 -n 256), and what Baton adds.
struct generate_options {
  float temperature = 1.0f;
  float top_p = 0.9f;
  std::uint64_t seed = 1;
  /// Positions including the prompt, like llama2.c's -n; 0 or > seq_len means seq_len.
  std::int32_t steps = 256;
  /// The other sampling options (its temperature and top_p are the fields above).
  sampling_options sampling = {};
  /// Generate choice `choice` of a request of several (choice_seed(seed, choice)).
  std::uint32_t choice = 0;
  /// Go on past the end-of-text token, as a token like any other.
  bool ignore_eos = false;
};

struct generate_result {
  std::vector<std::int32_t> prompt_tokens;  ///< BOS first
  std::vector<std::int32_t> generated;      ///< sampled tokens, in order
  double prefill_seconds = 0;
  double decode_seconds = 0;
};

/// Runs one sequence through `engine` exactly as llama2.c's `run` generates: encodes the
/// prompt (BOS, leading space), echoes each prompt piece, then samples until `steps`
/// positions or BOS. Every printable piece goes to `emit` as soon as it is known; the
/// caller prints the final newline. The prompt runs as one prefill, the rest as decode
/// steps; the sequence is removed at the end.
[[nodiscard]] expected<generate_result> generate(cpu_engine& engine, const tokenizer& tok,
                                                 std::string_view prompt,
                                                 const generate_options& options,
                                                 const std::function<void(std::string_view)>& emit);

/// What llama2.c echoes of `prompt` before it samples (no newline): what the OpenAI API's
/// completion text leaves out of the generate_text() of the same request.
[[nodiscard]] expected<std::string> prompt_echo(cpu_engine& engine, const tokenizer& tok,
                                                std::string_view prompt);

/// The exact text llama2.c prints for these arguments: the pieces plus a final newline.
[[nodiscard]] expected<std::string> generate_text(cpu_engine& engine, const tokenizer& tok,
                                                  std::string_view prompt,
                                                  const generate_options& options);

}  // namespace baton::engine
