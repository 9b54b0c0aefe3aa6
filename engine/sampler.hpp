#pragma once

#include <cstdint>
#include <span>
#include <vector>

namespace baton::engine {

/// llama2.c's xorshift64* generator: one draw per sampled token.
[[nodiscard]] std::uint32_t xorshift_u32(std::uint64_t& state);
/// A float in [0, 1) from 24 bits of one draw, as llama2.c's random_f32.
[[nodiscard]] float xorshift_f32(std::uint64_t& state);

/// Picks next tokens exactly as llama2.c's `run -t T -p P -s S`: the argmax at
/// temperature 0 (no draw); otherwise logits / T, float softmax, one coin per sampled
/// token, then top-p (when 0 < p < 1: keep probabilities >= (1-p)/(n-1), stable sort
/// descending, cut once the cumulative sum exceeds p, r = coin * that sum) or the plain
/// cumulative distribution.
///
/// Resumability: the generator state before the k-th sampled token (k from 0) is the
/// seed advanced k times, a pure function of (seed, k); `at(seed, k)` rebuilds it, so a
/// generation resumed on another node draws the same coins. Not thread-safe.
class sampler {
 public:
  sampler(float temperature, float top_p, std::uint64_t seed);

  /// A sampler that has already drawn for `sampled` tokens (O(sampled) to build).
  [[nodiscard]] static sampler at(float temperature, float top_p, std::uint64_t seed,
                                  std::uint64_t sampled);

  /// Picks one token id; scales and softmaxes `logits` in place (as llama2.c does).
  [[nodiscard]] std::int32_t sample(std::span<float> logits);

  /// How many tokens this sampler has sampled (the k of the next one).
  [[nodiscard]] std::uint64_t sampled() const { return sampled_; }
  [[nodiscard]] std::uint64_t state() const { return state_; }

 private:
  float temperature_;
  float top_p_;
  std::uint64_t state_;
  std::uint64_t sampled_ = 0;
  struct candidate {
    float probability;
    std::int32_t index;
  };
  std::vector<candidate> candidates_;  ///< scratch for top-p
};

}  // namespace baton::engine
