#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <unordered_map>
#include <unordered_set>
#include <utility>
#include <vector>

namespace baton::engine {

/// llama2.c's xorshift64* generator: one draw per sampled token.
[[nodiscard]] std::uint32_t xorshift_u32(std::uint64_t& state);
/// A float in [0, 1) from 24 bits of one draw, as llama2.c's random_f32.
[[nodiscard]] float xorshift_f32(std::uint64_t& state);

/// The seed of choice `index` of a request seeded `seed` (OpenAI's `n`): choice 0 keeps
/// the request's seed, so n = 1 draws exactly what a single request does; choice i > 0
/// takes splitmix64(seed + i), or 1 where that is 0 (a zero state draws zeros for ever).
[[nodiscard]] std::uint64_t choice_seed(std::uint64_t seed, std::uint32_t index);

/// How tokens are picked. Every field at its default leaves llama2.c's arithmetic
/// untouched (bit-identical picks); the others follow OpenAI's and vLLM's definitions
/// (docs/http-api.md), applied in this order to the model's logits:
///   1. logit_bias is added; 2. before min_tokens tokens were generated, end_token's logit
///   is -inf; 3. repetition_penalty (over prompt and generated tokens): a positive logit is
///   divided by it, a negative one multiplied; 4. frequency and presence penalties (over
///   generated tokens): logit -= count * frequency_penalty + (count > 0) * presence_penalty.
/// Log-probabilities are reported from these adjusted logits, before the temperature.
/// Then: temperature 0 takes the argmax (first of equals, no draw); otherwise logits /
/// temperature, softmax and one coin, then among the tokens with p >= min_p * max(p), the
/// top_k most likely (stable, descending), cut where the cumulative sum first exceeds
/// top_p, the coin picks in that nucleus's cumulative distribution.
struct sampling_options {
  float temperature = 0.0f;
  float top_p = 1.0f;
  std::uint32_t top_k = 0;  ///< 0: off
  float min_p = 0.0f;       ///< 0: off
  float frequency_penalty = 0.0f;
  float presence_penalty = 0.0f;
  float repetition_penalty = 1.0f;  ///< 1: off
  std::vector<std::pair<std::int32_t, float>> logit_bias{};
  std::uint32_t min_tokens = 0;
  std::int32_t end_token = 1;  ///< llama2.c's BOS, which ends a generation
  /// Report each pick's log-probability and this many most likely alternatives (0..20).
  bool logprobs = false;
  std::uint32_t top_logprobs = 0;
};

/// One pick's log-probability and the most likely alternatives, most likely first.
struct token_logprobs {
  std::int32_t token = 0;
  float logprob = 0.0f;
  std::vector<std::pair<std::int32_t, float>> top;
};

/// Picks next tokens exactly as llama2.c's `run -t T -p P -s S` when only temperature and
/// top-p are set (sampling_options says what the others do).
///
/// Resumability: the generator state before the k-th sampled token (k from 0) is the
/// seed advanced k times, a pure function of (seed, k), and the penalties' state is a
/// function of the prompt and the tokens generated so far: a sampler built from those on
/// another node draws what this one would have. Not thread-safe.
class sampler {
 public:
  /// A sampler that has already generated `generated` after `prompt` (O(their length)).
  sampler(sampling_options options, std::uint64_t seed, std::span<const std::int32_t> prompt = {},
          std::span<const std::int32_t> generated = {});
  /// llama2.c's sampler: temperature and top-p only.
  sampler(float temperature, float top_p, std::uint64_t seed);

  /// A llama2.c sampler that has already drawn for `sampled` tokens.
  [[nodiscard]] static sampler at(float temperature, float top_p, std::uint64_t seed,
                                  std::uint64_t sampled);

  /// Picks one token id; may change `logits` in place (as llama2.c scales them).
  [[nodiscard]] std::int32_t sample(std::span<float> logits);

  /// How many tokens this sampler has sampled (the k of the next one).
  [[nodiscard]] std::uint64_t sampled() const { return sampled_; }
  [[nodiscard]] std::uint64_t state() const { return state_; }
  [[nodiscard]] const sampling_options& options() const { return options_; }
  /// The last pick's log-probabilities, when options().logprobs.
  [[nodiscard]] const std::optional<token_logprobs>& last_logprobs() const { return last_; }

 private:
  /// Whether any option other than temperature and top-p changes the logits.
  [[nodiscard]] bool adjusts_logits() const;
  void adjust(std::span<float> logits) const;
  void record(std::int32_t token);
  /// Temperature, softmax, one coin, then the nucleus: llama2.c's, or the filtered one.
  [[nodiscard]] std::int32_t draw(std::span<float> logits);
  [[nodiscard]] std::int32_t pick_filtered(std::span<const float> probabilities, float coin);

  sampling_options options_;
  std::uint64_t state_;
  std::uint64_t sampled_ = 0;
  std::unordered_map<std::int32_t, std::uint32_t> generated_;  ///< counts, for penalties
  std::unordered_set<std::int32_t> seen_;  ///< prompt and generated tokens: repetition
  std::optional<token_logprobs> last_;
  struct candidate {
    float probability;
    std::int32_t index;
  };
  std::vector<candidate> candidates_;  ///< scratch for top-p
};

}  // namespace baton::engine
